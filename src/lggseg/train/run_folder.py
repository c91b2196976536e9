"""The run folder: the one place that names a training run's files and knows how to read them.

A run folder holds::

    config.yaml              the resolved config (for people; the checkpoint carries its own copy)
    split.json               the patients used: train, validation, test, skipped
    checkpoint.safetensors   THE checkpoint: model tensors (``model.*``), AdamW tensors (``optim.*``)
                             and the training state as JSON metadata (epoch, best epoch, history,
                             config); written by one atomic rename, so a kill at any instant
                             leaves the previous epoch's checkpoint or this one, never a mix
    best.safetensors         the deliverable weights (the best validation epoch, or the last one
                             without validation patients; calibrated)
    log.csv, curves.png      one row per epoch, and its figure
    calibration.json         the post-processing chosen on validation patients (or adopted from
                             another run's: ``rule_from``)

The checkpoint is the only authoritative source of the training state: every reader (resume,
``run_finished``, ``cv``) goes through :meth:`RunFolder.state`. A published run folder (copied
without its checkpoint, as ``scripts/publish_cv.sh`` does) is read from ``config.yaml`` and
``log.csv``: it can be calibrated again, evaluated and merged, not resumed. Folders written by earlier versions
(``resume.safetensors`` plus the copies ``last.safetensors``, ``optimizer.safetensors`` and
``state.json``) are read as they are: their ``resume.safetensors`` is the checkpoint (``state.json``
only when it is missing); the first checkpoint written by this version replaces them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from lggseg.errors import LggsegError
from lggseg.io import atomic
from lggseg.model.bundle import BEST_NAME, read_safetensors, save_weights
from lggseg.model.unet import UNet
from lggseg.train.config import TrainConfig, config_from_dict, dump_config, load_config


class RunFolder:
    """A training run's folder (see the module docstring for its files)."""

    CHECKPOINT = "checkpoint.safetensors"
    BEST = BEST_NAME
    CONFIG = "config.yaml"
    SPLIT = "split.json"
    LOG = "log.csv"
    CURVES = "curves.png"
    CALIBRATION = "calibration.json"
    LEGACY_CHECKPOINT = "resume.safetensors"
    LEGACY_STATE = "state.json"
    LEGACY_COPIES = ("last.safetensors", "optimizer.safetensors", LEGACY_STATE, LEGACY_CHECKPOINT)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def calibration(self) -> Path:
        return self.path / self.CALIBRATION

    # ------------------------------------------------------------------------------ reading

    def _checkpoint_file(self) -> Path | None:
        """The file holding the current checkpoint (this version's, else a legacy one), or None."""
        for name in (self.CHECKPOINT, self.LEGACY_CHECKPOINT):
            if (self.path / name).exists():
                return self.path / name
        return None

    def has_checkpoint(self) -> bool:
        """True once an epoch was completed (a legacy ``state.json`` counts)."""
        return self._checkpoint_file() is not None or (self.path / self.LEGACY_STATE).exists()

    def state(self) -> dict[str, Any]:
        """The training state of the last completed epoch: epoch, best_epoch, best_val_dice, history, config."""
        path = self._checkpoint_file()
        if path is not None:
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt") as handle:
                    return json.loads((handle.metadata() or {})["state"])
            except Exception:  # a damaged header, or no state in it
                raise LggsegError(f"{path}: checkpoint without a readable training state") from None
        legacy = self.path / self.LEGACY_STATE
        if legacy.exists():
            return json.loads(legacy.read_text())
        raise LggsegError(f"{self.path}: not a run folder to resume (no {self.CHECKPOINT})")

    def config(self) -> TrainConfig:
        """The config the run was trained with: from its checkpoint, or from ``config.yaml`` in a
        published run (one copied without its checkpoint, as ``scripts/publish_cv.sh`` does)."""
        if not self.has_checkpoint() and (self.path / self.CONFIG).exists():
            return load_config(self.path / self.CONFIG)
        return config_from_dict(self.state().get("config", {}), str(self.path))

    def finished(self) -> bool:
        """True when training ended by its own rule (all epochs, or early stop) and, if the
        config asks for calibration, was calibrated. An interrupted run is not finished. A
        published run (no checkpoint) counts as finished when its log holds every epoch, or
        stops where the early-stop rule stopped it."""
        if not self.best.exists():
            return False
        if self.has_checkpoint():
            state = self.state()
            cfg = config_from_dict(state["config"], str(self.path))
            last, best = state["epoch"], state["best_epoch"]
        elif (self.path / self.CONFIG).exists() and (self.path / self.LOG).exists():
            cfg = self.config()
            rows = csv.DictReader((self.path / self.LOG).read_text().splitlines())
            val_dice = [float(row["val_dice"] or "-inf") for row in rows]  # empty: a refit's unvalidated epoch
            if not val_dice:
                return False
            last, best = len(val_dice) - 1, max(range(len(val_dice)), key=val_dice.__getitem__)
        else:
            return False
        ended = last + 1 >= cfg.epochs or stops_early(cfg, last, best)
        chooses_rule = cfg.calibrate or bool(cfg.rule_from)  # chosen here, or adopted (a refit)
        return ended and (not chooses_rule or self.calibration.exists())

    # ------------------------------------------------------------------------------ writing

    def write_config(self, cfg: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path / self.CONFIG, dump_config(cfg))

    def write_split(self, split: dict[str, Any]) -> None:
        atomic.write_text(self.path / self.SPLIT, json.dumps(split, indent=1))

    def save_checkpoint(
        self,
        model: UNet,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        best: bool,
        averaged: UNet | None = None,
    ) -> None:
        """Commit one epoch: ``best.safetensors`` first when it improved, then the checkpoint.

        ``averaged`` (the weight average of :mod:`lggseg.train.ema`, when the recipe keeps one) is
        what ``best.safetensors`` holds then, and the checkpoint stores it beside the model.
        """
        from safetensors.torch import save as save_bytes

        if best:  # before the commit point: a kill here only repeats this epoch, which rewrites it
            info = {"fold": state["config"]["fold"], "epoch": state["epoch"], "val_dice": state["last_val_dice"]}
            if state["config"].get("augment", {}).get("flair_only_prob", 0.0) >= 1.0:
                # Trained and validated on FLAIR alone (repeated to 3 channels): Segmenter shows such a
                # model FLAIR alone whatever the input holds; the record also reaches ``/healthz``
                # (model.info) and the ONNX metadata.
                info["input"] = "flair_only"
            if (self.path / self.SPLIT).exists():  # provenance: which patients shaped these weights
                split = json.loads((self.path / self.SPLIT).read_text())
                seen = split.get("train", []) + split.get("validation", []) + split.get("init_trained_on", [])
                info["trained_on"] = sorted(set(seen))
            save_weights(self.best, averaged if averaged is not None else model, info=info)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if averaged is not None:
            tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in averaged.state_dict().items()})
        for pid, values in optimizer.state_dict()["state"].items():
            for key, value in values.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        atomic.write_bytes(self.checkpoint, save_bytes(tensors, metadata={"state": json.dumps(state)}))
        for name in self.LEGACY_COPIES:  # an older version's files, superseded by the commit above
            (self.path / name).unlink(missing_ok=True)

    def load_checkpoint(
        self, model: UNet, optimizer: torch.optim.Optimizer, averaged: UNet | None = None
    ) -> dict[str, Any]:
        """Load model, optimizer and (when given and stored) the weight average; returns the training state."""
        path = self._checkpoint_file()
        if path is None:
            raise LggsegError(f"{self.path}: not a run folder to resume (no {self.CHECKPOINT})")
        state = self.state()
        tensors, _ = read_safetensors(path)
        model.load_state_dict(_with_prefix(tensors, "model."))
        if averaged is not None:  # no average stored: start it from the model
            averaged.load_state_dict(_with_prefix(tensors, "ema.") or model.state_dict())
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                pid, key = name[len("optim.") :].split(".", 1)
                opt_state.setdefault(int(pid), {})[key] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
        for leftover in self.path.glob(".*.*"):  # temporary files of a write that a kill interrupted
            leftover.unlink(missing_ok=True)
        return state

    def checkpoint_tensors(self, prefix: str = "model.") -> dict[str, torch.Tensor]:
        """The checkpoint's tensors named ``prefix...`` (``model.``: the network, ``ema.``: its weight
        average), keyed without the prefix: a state dict."""
        path = self._checkpoint_file()
        if path is None:
            raise LggsegError(f"{self.path}: no {self.CHECKPOINT}")
        return _with_prefix(read_safetensors(path)[0], prefix)

    def write_log(self, history: list[dict[str, Any]], fields: list[str]) -> None:
        """``log.csv`` and ``curves.png`` from the epoch history."""
        import io

        from lggseg.evaluation.figures import training_curves

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic.write_text(self.path / self.LOG, buffer.getvalue())
        training_curves(history, self.path / self.CURVES)

    def write_calibration(self, report: dict[str, Any]) -> None:
        atomic.write_text(self.calibration, json.dumps(report, indent=1))


def stops_early(cfg: TrainConfig, epoch: int, best_epoch: int) -> bool:
    """The early-stop rule: ``patience`` epochs without a validation improvement (0 = never)."""
    return bool(cfg.patience) and epoch - best_epoch >= cfg.patience


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix...``, keyed without the prefix."""
    return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}
