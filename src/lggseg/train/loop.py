"""Training: ``train(cfg) -> run folder``, readable top to bottom.

The run folder and its files are described in :mod:`lggseg.train.run_folder`. Every epoch ends
with one atomic checkpoint, so a resumed run continues exactly where it stopped (bit for bit).

Distributed (``torchrun`` or ``lggseg train --nproc N``, see :mod:`lggseg.train.distributed` and
docs/distributed.md): every rank draws the same epoch indices as a single process would, then
takes its disjoint share (positions ``rank::world_size``); ``batch_size`` is the global batch,
``batch_size / world_size`` per rank, so steps per epoch and the LR schedule do not change with
the number of processes. Rank 0 alone logs, draws progress bars, validates (and broadcasts the
result, so every rank takes the same early-stop decision), writes the run folder and calibrates.
A process started without torchrun runs exactly the single-process code path.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from lggseg.data.dataset import flair_only_images
from lggseg.data.splits import FoldSplit
from lggseg.errors import LggsegError
from lggseg.infer import runtime
from lggseg.model.bundle import load_weights
from lggseg.model.unet import UNet
from lggseg.train import distributed
from lggseg.train.config import TrainConfig
from lggseg.train.distributed import Dist
from lggseg.train.ema import WeightAverage
from lggseg.train.epoch import EpochContext, StepInfo, train_one_epoch, validate
from lggseg.train.run_folder import RunFolder, stops_early
from lggseg.train.slices import SliceBank, load_split_volumes
from lggseg.train.teacher import fold_path, refuse_leak, teacher_paths, teacher_targets

NOT_VALIDATED = {"val_loss": None, "val_dice": None, "val_iou": None}
"""The validation columns of an epoch of a run without validation patients (``n_validation: 0``)."""

LOG_FIELDS = ["epoch", "lr", "train_loss", "train_dice", "train_iou", "val_loss", "val_dice", "val_iou", "seconds"]

__all__ = ["LOG_FIELDS", "StepInfo", "config_of_run", "run_finished", "train"]


def train(
    cfg: TrainConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
    step_callback: Callable[[StepInfo], None] | None = None,
) -> Path:
    """Train a U-Net for ``cfg.fold`` and return the run folder.

    With ``resume=True`` the run folder's checkpoint is loaded and training continues from the
    epoch after the last completed one (``cfg.epochs`` may be raised to train longer).
    Under torchrun (or :func:`lggseg.train.distributed.launch`) this process joins the process
    group and trains its share with DDP; ``log`` is then only called on rank 0.
    ``step_callback`` (tests, diagnostics) is called on every rank after each backward pass.
    """
    with distributed.process_group(cfg.device) as (dist, device):
        return _train(cfg, dist, device, resume, log if dist.is_main else _quiet, stop_after_epochs, step_callback)


def _train(
    cfg: TrainConfig,
    dist: Dist,
    device: torch.device,
    resume: bool,
    log: Callable[[str], None],
    stop_after_epochs: int | None,
    step_callback: Callable[[StepInfo], None] | None,
) -> Path:
    """The body of :func:`train` for one rank (``dist`` is rank 0 of 1 without torchrun)."""
    # 1. the process: allocator, threads, model, optimizer, and the checkpoint to resume from
    runtime.tune_malloc()
    local_batch = distributed.local_batch_size(cfg.batch_size, dist)  # == cfg.batch_size alone
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dist.enabled:
        torch.set_num_threads(distributed.threads_per_rank(dist))
    run = RunFolder(cfg.out)
    bf16 = runtime.use_bf16(device, cfg.bf16)
    torch.manual_seed(cfg.seed)
    unet = UNet(cfg.model)
    runtime.prepare_model(unet, device)  # in place: Module.to returns the module itself
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch, best_dice, best_epoch = 0, -1.0, -1
    ema = WeightAverage(unet, cfg.ema_decay) if cfg.ema_decay > 0 else None
    averaged = ema.model if ema is not None else None  # with an average, it is validated, calibrated and saved
    if resume:
        state = run.load_checkpoint(unet, optimizer, averaged)
        start_epoch, best_dice, best_epoch = state["epoch"] + 1, state["best_val_dice"], state["best_epoch"]
        if ema is not None:
            ema.updates = int(state.get("ema_updates", 0))
        history = state["history"]
        best = (
            f"best validation Dice {best_dice:.4f} at epoch {best_epoch + 1}" if cfg.n_validation else "no validation"
        )
        log(f"resuming {run.path} after epoch {state['epoch'] + 1} ({best})")
    model = distributed.wrap_model(unet, dist, device, cfg.sync_bn)  # DDP in a process group, else unet
    steps = (cfg.epochs - start_epoch) * cfg.steps_per_epoch  # the steps this process will take
    if runtime.use_compile(cfg.compile, device, steps, dist.enabled):
        log("the training step is compiled (torch.compile) on its first call: about a minute on 2 CPU cores")
        model = runtime.compile_for_training(model, fall_back=cfg.compile == "auto")  # unet stays the eager module
    if dist.is_main:
        run.write_config(cfg)

    # 2. the data: the fold's training and validation patients, cached in RAM
    split, train_volumes, val_volumes = load_split_volumes(cfg, log, show_progress=dist.is_main)
    if cfg.augment.flair_only_prob >= 1.0:  # a FLAIR-only model is validated and calibrated as predict feeds it
        val_volumes = [dataclasses.replace(v, images=flair_only_images(v.images[..., 1])) for v in val_volumes]
    if cfg.rule_from:  # refuse a missing or leaking source now, not after the last epoch
        from lggseg.train.calibrate import adopted_rule

        adopted_rule(fold_path(cfg.rule_from, split.fold), list(split.test))
    init_seen: list[str] = []
    if cfg.init_weights:
        init_seen = init_from_weights(cfg, unet, split, load_state=not resume, log=log)
        if averaged is not None and not resume:  # the average starts from the fine-tune's starting point
            averaged.load_state_dict(unet.state_dict())
    bank = SliceBank.from_volumes(train_volumes)
    teachers: list[dict[str, str]] = []
    if cfg.distill_teachers:  # the student's targets mix the annotation with the teachers' mean probability
        paths = teacher_paths(cfg.distill_teachers, split.fold)
        bank.soft, teachers = teacher_targets(paths, train_volumes, list(split.test), cfg.threads, log)
    if dist.is_main:
        train_names = [v.name for v in train_volumes]
        run.write_split(
            {
                "fold": split.fold,
                "train": train_names,
                "validation": list(split.validation),
                "test": list(split.test),
                "skipped": split.skipped,
                **({"init_weights": cfg.init_weights, "init_trained_on": init_seen} if cfg.init_weights else {}),
                **({"distill_teachers": teachers, "distill_weight": cfg.distill_weight} if teachers else {}),
            }
        )
    log(f"{len(bank)} training slices ({len(bank.tumor)} with tumor) cached in RAM; device {device}, bf16 {bf16}")
    if dist.enabled:
        log(
            f"distributed: {dist.world_size} process(es), global batch {cfg.batch_size} = {local_batch} per process, "
            f"sync_bn {cfg.sync_bn}"
        )
    ctx = EpochContext(cfg, model, unet, optimizer, bank, dist, device, bf16, step_callback, ema)
    validated = averaged if averaged is not None else unet

    # 3. the epochs: train, validate, checkpoint; stop on Ctrl-C (after the checkpoint) or early
    stop = _InterruptFlag(log)
    epochs_done = 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            began = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, **train_one_epoch(ctx, epoch)}
            if val_volumes:
                val = validate(validated, val_volumes, device, bf16, cfg.bce_weight) if dist.is_main else None
                row.update(distributed.broadcast_object(val, dist))  # every rank takes the same decisions
            else:  # a refit: nothing to validate on, so the deliverable is the latest epoch
                row.update(NOT_VALIDATED)
            row["seconds"] = time.perf_counter() - began
            history.append(row)
            improved = not val_volumes or row["val_dice"] > best_dice
            if improved:
                best_epoch = epoch
                best_dice = row["val_dice"] if val_volumes else best_dice
            state = {
                "epoch": epoch,
                "best_val_dice": best_dice,
                "best_epoch": best_epoch,
                "last_val_dice": row["val_dice"],
                "history": history,
                "config": cfg.to_dict(),
                **({"ema_updates": ema.updates} if ema is not None else {}),
            }
            if dist.is_main:
                run.save_checkpoint(unet, optimizer, state, best=improved, averaged=averaged)
                run.write_log(history, LOG_FIELDS)
            validation = (
                f"val loss {row['val_loss']:.4f} per-patient Dice {row['val_dice']:.4f} IoU {row['val_iou']:.4f}"
                f"{' (best)' if improved else ''}"
                if val_volumes
                else "no validation patients"
            )
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} train Dice {row['train_dice']:.3f} | "
                f"{validation} | {row['seconds']:.0f} s"
            )
            epochs_done += 1
            if distributed.any_rank(stop.flag, dist):
                log(f"stopped after epoch {epoch + 1}; resume with --resume {run.path}")
                return run.path
            if stops_early(cfg, epoch, best_epoch):
                log(f"early stop: no validation improvement for {cfg.patience} epochs")
                break
            if stop_after_epochs is not None and epochs_done >= stop_after_epochs:
                return run.path
    finally:
        stop.restore()

    # 4. calibration: the post-processing of best.safetensors, chosen on validation patients (here,
    # or by the run it is adopted from)
    if cfg.calibrate and dist.is_main:
        from lggseg.train.calibrate import calibrate_run

        calibrate_run(run, val_volumes, log)
    if cfg.rule_from and dist.is_main:
        from lggseg.train.calibrate import adopt_rule

        adopt_rule(run, fold_path(cfg.rule_from, split.fold), list(split.test), log)
    return run.path


def init_from_weights(
    cfg: TrainConfig, unet: UNet, split: FoldSplit, load_state: bool, log: Callable[[str], None]
) -> list[str]:
    """Fine-tuning: copy ``cfg.init_weights`` into ``unet``; returns the patients those weights saw.

    ``{fold}`` in the path is replaced by the split's fold (as for ``distill_teachers``), so one
    config fine-tunes each fold of a cross-validation from that fold's own network. Refuses weights
    of another architecture, weights that do not record their training patients, and weights that
    saw any of this fold's test patients (that would leak the test set).
    """
    path = fold_path(cfg.init_weights, split.fold)
    bundle = load_weights(path)
    if bundle.model.config != cfg.model:
        raise LggsegError(f"init_weights {path}: architecture {bundle.model.config} differs from {cfg.model}")
    seen = refuse_leak(bundle, f"init_weights {path}", list(split.test))
    if load_state:
        unet.load_state_dict(bundle.model.state_dict())
        log(f"initialised from {path} (SHA-256 {bundle.sha256[:12]}..., trained on {len(seen)} patients)")
    return seen


def run_finished(run: str | Path) -> bool:
    """True when a run folder's training ended by its own rule and, if asked, was calibrated."""
    return RunFolder(run).finished()


def config_of_run(run: str | Path) -> TrainConfig:
    """The config a run folder was trained with (from its checkpoint)."""
    return RunFolder(run).config()


class _InterruptFlag:
    """The first Ctrl-C sets ``flag`` (the epoch ends with its checkpoint); a second one aborts."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.flag = False
        self.log = log
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.flag = True
        # The next Ctrl-C raises KeyboardInterrupt, whatever the process inherited (a job started in the
        # background by a shell inherits SIGINT ignored); set before the message shows, so a Ctrl-C sent
        # once it shows always aborts. restore() puts the inherited handler back when training ends.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.log("interrupt: finishing this epoch's checkpoint, then stopping (press Ctrl-C again to abort)")

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _quiet(message: str) -> None:
    """The log of ranks other than 0: says nothing."""
