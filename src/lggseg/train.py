"""Training: ``train(cfg) -> run folder``, readable top to bottom.

The run folder holds ``config.yaml`` (resolved config), ``split.json`` (patients used),
``best.safetensors`` / ``last.safetensors`` (weights), ``optimizer.safetensors`` and
``state.json`` (to resume), ``log.csv`` (one row per epoch), ``curves.png`` and, after training,
``calibration.json`` (post-processing chosen on validation patients).

Every epoch draws its samples and augmentation from a generator seeded by (seed, epoch), and
checkpoints are written at epoch ends, so a resumed run continues exactly where it stopped.

Distributed (``torchrun`` or ``lggseg train --nproc N``, see :mod:`lggseg.distributed` and
docs/distributed.md): every rank draws the same epoch indices as a single process would, then
takes its disjoint share (positions ``rank::world_size``); ``batch_size`` is the global batch,
``batch_size / world_size`` per rank, so steps per epoch and the LR schedule do not change with
the number of processes. Each rank augments its share with its own generator seeded by
(seed, epoch, rank). Rank 0 alone logs, draws progress bars, validates (and broadcasts the
result, so every rank takes the same early-stop decision), writes the run folder and calibrates.
A process started without torchrun runs exactly the single-process code path.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lggseg import atomic, distributed, metrics, runtime
from lggseg.config import TrainConfig, config_from_dict, dump_config
from lggseg.dataset import Volume, index_dataset, load_volume
from lggseg.distributed import Dist
from lggseg.errors import LggsegError
from lggseg.losses import dice_bce_loss
from lggseg.model import UNet
from lggseg.postprocess import PostProcess
from lggseg.splits import FoldSplit, split_for_fold
from lggseg.transforms import augment, normalize, tumor_biased_crop, volume_stats
from lggseg.weights import save_weights

LOG_FIELDS = ["epoch", "lr", "train_loss", "train_dice", "train_iou", "val_loss", "val_dice", "val_iou", "seconds"]


@dataclass
class SliceBank:
    """Training slices cached in RAM.

    images: ``(N, 256, 256, 3)`` uint8; masks: ``(N, 256, 256)`` bool; stats: ``(N, 4, 3)``
    float32 (the per-volume normalisation stats of each slice's patient); tumor: indices of
    slices with a non-empty mask.
    """

    images: torch.Tensor
    masks: torch.Tensor
    stats: torch.Tensor
    tumor: torch.Tensor

    @classmethod
    def from_volumes(cls, volumes: list[Volume]) -> "SliceBank":
        images = np.concatenate([v.images for v in volumes])
        masks = np.concatenate([v.masks for v in volumes])
        stats = np.concatenate([np.repeat(volume_stats(v.images)[None], len(v.images), 0) for v in volumes])
        tumor = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
        return cls(torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(stats), torch.from_numpy(tumor))

    def __len__(self) -> int:
        return self.images.shape[0]


def draw_epoch(bank: SliceBank, n: int, fg_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Indices for one epoch: ``fg_fraction`` from tumor slices, the rest from all slices, shuffled."""
    n_fg = int(round(n * fg_fraction)) if len(bank.tumor) else 0
    fg = bank.tumor[torch.randint(len(bank.tumor), (n_fg,), generator=generator)] if n_fg else torch.empty(0, dtype=torch.long)
    rest = torch.randint(len(bank), (n - n_fg,), generator=generator)
    both = torch.cat([fg, rest])
    return both[torch.randperm(n, generator=generator)]


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepInfo:
    """What a ``step_callback`` sees on each rank after the backward pass, before the optimizer step.

    indices: ``(b,)`` slice-bank indices of this rank's samples; x: ``(b, 3, 256, 256)`` network
    input; y: ``(b, 1, 256, 256)`` target; loss: this rank's scalar loss; model: the U-Net (not the
    DDP wrapper), whose ``.grad`` already holds the gradient averaged over all ranks.
    """

    epoch: int
    step: int
    rank: int
    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor
    model: torch.nn.Module


def load_split_volumes(cfg: TrainConfig, log: Callable[[str], None], show_progress: bool = True) -> tuple[FoldSplit, list[Volume], list[Volume]]:
    """Index the data, split it for the fold, and load train + validation volumes into RAM."""
    index = index_dataset(cfg.data)
    for problem in index.problems:
        log(f"data: {problem}")
    named = index.by_name()
    split = split_for_fold(sorted(named), cfg.fold, cfg.n_validation, cfg.split_seed)
    train_names = list(split.train)
    if cfg.max_train_patients:
        train_names = train_names[: cfg.max_train_patients]
    log(
        f"fold {cfg.fold}: {len(train_names)} train, {len(split.validation)} validation, {len(split.test)} test patients held out; "
        f"{split.skipped} patient(s) of the canonical split absent from the data folder"
    )
    from lggseg.progress import track

    names = train_names + list(split.validation)
    volumes = {}
    for name in track(names, description="loading slices") if show_progress else names:
        volume = load_volume(named[name])
        if volume.masks is None:
            raise LggsegError(f"{named[name].folder}: training patients need a mask for every slice")
        volumes[name] = volume
    return split, [volumes[n] for n in train_names], [volumes[n] for n in split.validation]


class Checkpointer:
    """Writes and reads the run folder's resumable state.

    ``resume.safetensors`` is the one commit point of a checkpoint: model tensors (``model.*``),
    optimizer tensors (``optim.*``) and the training state (JSON in the metadata) land together
    in one atomic rename. ``last.safetensors``, ``optimizer.safetensors`` and ``state.json`` are
    written after it, for people and tools; resuming reads only ``resume.safetensors``. A kill
    at any instant therefore resumes from one consistent epoch.
    """

    RESUME = "resume.safetensors"

    def __init__(self, run: Path) -> None:
        self.run = run

    def save(self, model: UNet, optimizer: torch.optim.Optimizer, state: dict[str, Any], best: bool) -> None:
        from safetensors.torch import save as save_bytes

        flat: dict[str, torch.Tensor] = {}
        for pid, values in optimizer.state_dict()["state"].items():
            for key, value in values.items():
                flat[f"{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        info = {"fold": state["config"]["fold"], "epoch": state["epoch"], "val_dice": state["last_val_dice"]}
        if best:  # before the commit point: a kill here only repeats this epoch, which rewrites it
            save_weights(self.run / "best.safetensors", model, info=info)
        bundle = {**{f"model.{k}": v for k, v in model_tensors.items()}, **{f"optim.{k}": v for k, v in flat.items()}}
        atomic.write_bytes(self.run / self.RESUME, save_bytes(bundle, metadata={"state": json.dumps(state)}))
        save_weights(self.run / "last.safetensors", model, info=info)
        atomic.write_bytes(self.run / "optimizer.safetensors", save_bytes(flat))
        atomic.write_text(self.run / "state.json", json.dumps(state, indent=1))

    def load(self, model: UNet, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from lggseg.weights import read_safetensors

        path = self.run / self.RESUME
        if not path.exists():
            raise LggsegError(f"{self.run}: no {self.RESUME} to resume from (the run never finished an epoch)")
        tensors, metadata = read_safetensors(path)
        try:
            state = json.loads(metadata["state"])
        except (KeyError, ValueError):
            raise LggsegError(f"{path}: checkpoint without a readable training state") from None
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                pid, key = name[len("optim.") :].split(".", 1)
                opt_state.setdefault(int(pid), {})[key] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
        for leftover in self.run.glob(".*.*"):  # temporary files of a write that a kill interrupted
            leftover.unlink(missing_ok=True)
        return state


@torch.inference_mode()
def validate(model: UNet, volumes: list[Volume], device: torch.device, bf16: bool, bce_weight: float, batch_size: int = 16) -> dict[str, float]:
    """Per-patient 3D Dice/IoU at threshold 0.5 (no post-processing), and the mean loss."""
    model.eval()
    dices, ious, losses = [], [], []
    for volume in volumes:
        stats = torch.from_numpy(volume_stats(volume.images))
        pred = np.empty(volume.masks.shape, bool)
        for start in range(0, len(volume.images), batch_size):
            raw = torch.from_numpy(volume.images[start : start + batch_size]).permute(0, 3, 1, 2).float()
            target = torch.from_numpy(volume.masks[start : start + batch_size])[:, None].float()
            x = normalize(raw, stats).to(device).contiguous(memory_format=torch.channels_last)
            with runtime.autocast(device, bf16):
                logits = model(x)
            losses.append(float(dice_bce_loss(logits, target.to(device), bce_weight)))
            pred[start : start + batch_size] = (logits.float() > 0).cpu().numpy()[:, 0]
        dices.append(metrics.dice(pred, volume.masks))
        ious.append(metrics.iou(pred, volume.masks))
    return {"val_loss": float(np.mean(losses)), "val_dice": float(np.mean(dices)), "val_iou": float(np.mean(ious))}


def train(
    cfg: TrainConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
    step_callback: Callable[[StepInfo], None] | None = None,
) -> Path:
    """Train a U-Net for ``cfg.fold`` and return the run folder.

    With ``resume=True`` the run folder's state is loaded and training continues from the
    epoch after the last completed one (``cfg.epochs`` may be raised to train longer).
    Under torchrun (or :func:`lggseg.distributed.launch`) this process joins the process group
    and trains its share with DDP; ``log`` is then only called on rank 0.
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
    runtime.tune_malloc()
    local_batch = distributed.local_batch_size(cfg.batch_size, dist)  # == cfg.batch_size alone
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dist.enabled:
        torch.set_num_threads(distributed.threads_per_rank(dist))
    run = Path(cfg.out)
    bf16 = runtime.use_bf16(device, cfg.bf16)
    torch.manual_seed(cfg.seed)
    unet = runtime.prepare_model(UNet(cfg.model), device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    checkpoints = Checkpointer(run)
    history: list[dict[str, Any]] = []
    start_epoch, best_dice, best_epoch = 0, -1.0, -1
    if resume:
        state = checkpoints.load(unet, optimizer)
        start_epoch, best_dice, best_epoch = state["epoch"] + 1, state["best_val_dice"], state["best_epoch"]
        history = state["history"]
        log(f"resuming {run} after epoch {state['epoch'] + 1} (best validation Dice {best_dice:.4f} at epoch {best_epoch + 1})")
    model = distributed.wrap_model(unet, dist, device, cfg.sync_bn)  # DDP in a process group, else unet
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run / "config.yaml", dump_config(cfg))

    split, train_volumes, val_volumes = load_split_volumes(cfg, log, show_progress=dist.is_main)
    if dist.is_main:
        atomic.write_text(run / "split.json", json.dumps({"fold": split.fold, "train": [v.name for v in train_volumes], "validation": list(split.validation), "test": list(split.test), "skipped": split.skipped}, indent=1))
    bank = SliceBank.from_volumes(train_volumes)
    log(f"{len(bank)} training slices ({len(bank.tumor)} with tumor) cached in RAM; device {device}, bf16 {bf16}")
    if dist.enabled:
        log(f"distributed: {dist.world_size} process(es), global batch {cfg.batch_size} = {local_batch} per process, sync_bn {cfg.sync_bn}")
    steps_per_epoch = cfg.samples_per_epoch // cfg.batch_size

    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["flag"] = True
        log("interrupt: finishing this epoch's checkpoint, then stopping (press Ctrl-C again to abort)")
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None

    epochs_done = 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            began = time.perf_counter()
            generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            torch.manual_seed(cfg.seed * 7_919 + epoch + 104_729 * dist.rank)
            order = draw_epoch(bank, steps_per_epoch * cfg.batch_size, cfg.fg_fraction, generator)
            mine = distributed.shard(order, dist)  # this rank's share; all of ``order`` alone
            augment_generator = generator if dist.world_size == 1 else distributed.rank_generator(cfg.seed * 100_003 + epoch, dist)
            model.train()
            sums = {"loss": 0.0, "inter": 0.0, "total": 0.0, "union": 0.0}
            with _progress_bar(show=dist.is_main) as bar:
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
                for step in range(steps_per_epoch):
                    lr = learning_rate(cfg, epoch * steps_per_epoch + step, steps_per_epoch)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    idx = mine[step * local_batch : (step + 1) * local_batch]
                    raw = bank.images[idx].permute(0, 3, 1, 2).float()
                    target = bank.masks[idx][:, None].float()
                    x, y = augment(raw, target, bank.stats[idx], cfg.augment, augment_generator)
                    if cfg.crop_size:
                        x, y = tumor_biased_crop(x, y, cfg.crop_size, augment_generator)
                    x = x.to(device).contiguous(memory_format=torch.channels_last)
                    y = y.to(device)
                    with runtime.autocast(device, bf16):
                        logits = model(x)
                    loss = dice_bce_loss(logits, y, cfg.bce_weight)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # DDP averages the gradients over the ranks here
                    if step_callback is not None:
                        step_callback(StepInfo(epoch, step, dist.rank, idx, x, y, loss.detach(), unet))
                    optimizer.step()
                    with torch.no_grad():
                        hard = (logits.float() > 0).float()
                        inter, total = float((hard * y).sum()), float(hard.sum() + y.sum())
                    sums["loss"] += float(loss.detach())
                    sums["inter"] += inter
                    sums["total"] += total
                    sums["union"] += total - inter
                    dice_so_far = 2 * sums["inter"] / max(sums["total"], 1.0)
                    bar.update(task, advance=1, info=f"loss {sums['loss'] / (step + 1):.4f}  dice {dice_so_far:.3f}")
            sums = distributed.all_reduce_sums(sums, dist)  # totals over all ranks (unchanged alone)
            val = validate(unet, val_volumes, device, bf16, cfg.bce_weight) if dist.is_main else None
            val = distributed.broadcast_object(val, dist)  # every rank takes the same decisions
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": sums["loss"] / (steps_per_epoch * dist.world_size),
                "train_dice": 2 * sums["inter"] / max(sums["total"], 1.0),
                "train_iou": sums["inter"] / max(sums["union"], 1.0),
                **val,
                "seconds": time.perf_counter() - began,
            }
            history.append(row)
            improved = row["val_dice"] > best_dice
            if improved:
                best_dice, best_epoch = row["val_dice"], epoch
            state = {"epoch": epoch, "best_val_dice": best_dice, "best_epoch": best_epoch, "last_val_dice": row["val_dice"], "history": history, "config": cfg.to_dict()}
            if dist.is_main:
                checkpoints.save(unet, optimizer, state, best=improved)
                write_log(run, history)
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} train Dice {row['train_dice']:.3f} | "
                f"val loss {row['val_loss']:.4f} per-patient Dice {row['val_dice']:.4f} IoU {row['val_iou']:.4f}"
                f"{' (best)' if improved else ''} | {row['seconds']:.0f} s"
            )
            epochs_done += 1
            if distributed.any_rank(interrupted["flag"], dist):
                log(f"stopped after epoch {epoch + 1}; resume with --resume {run}")
                return run
            if stops_early(cfg, epoch, best_epoch):
                log(f"early stop: no validation improvement for {cfg.patience} epochs")
                break
            if stop_after_epochs is not None and epochs_done >= stop_after_epochs:
                return run
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if cfg.calibrate and dist.is_main:
        from lggseg.calibrate import calibrate_run

        calibrate_run(run, val_volumes, log)
    return run


def stops_early(cfg: TrainConfig, epoch: int, best_epoch: int) -> bool:
    """The early-stop rule: ``patience`` epochs without a validation improvement (0 = never)."""
    return bool(cfg.patience) and epoch - best_epoch >= cfg.patience


def run_finished(run: str | Path) -> bool:
    """True when a run folder's training ended by its own rule (all epochs, or early stop) and,
    if its config asks for calibration, was calibrated. An interrupted run is not finished."""
    run = Path(run)
    if not (run / "state.json").exists() or not (run / "best.safetensors").exists():
        return False
    state = json.loads((run / "state.json").read_text())
    cfg = config_from_dict(state["config"], str(run / "state.json"))
    ended = state["epoch"] + 1 >= cfg.epochs or stops_early(cfg, state["epoch"], state["best_epoch"])
    return ended and (not cfg.calibrate or (run / "calibration.json").exists())


def _quiet(message: str) -> None:
    """The log of ranks other than 0: says nothing."""


def _progress_bar(show: bool) -> Any:
    """The epoch's progress bar; ranks other than 0 get a disabled one (Rich's ``disable``)."""
    from lggseg.progress import make_progress

    bar = make_progress(transient=True)
    bar.disable = not show
    return bar


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def write_log(run: Path, history: list[dict[str, Any]]) -> None:
    """Write ``log.csv`` and ``curves.png`` from the epoch history."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic.write_text(run / "log.csv", buffer.getvalue())
    from lggseg.plots import training_curves

    training_curves(history, run / "curves.png")


def config_of_run(run: str | Path) -> TrainConfig:
    """The config a run folder was trained with (from its resume checkpoint, else ``state.json``)."""
    resume_file = Path(run) / Checkpointer.RESUME
    if resume_file.exists():
        from lggseg.weights import read_safetensors

        _, metadata = read_safetensors(resume_file)
        return config_from_dict(json.loads(metadata.get("state", "{}")).get("config", {}), str(resume_file))
    state_file = Path(run) / "state.json"
    if not state_file.exists():
        raise LggsegError(f"{run}: not a run folder to resume (no state.json)")
    return config_from_dict(json.loads(state_file.read_text())["config"], str(state_file))
