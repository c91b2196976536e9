"""The training configuration: one frozen, typed dataclass, loaded from YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lggseg.errors import LggsegError
from lggseg.model.unet import UNetConfig
from lggseg.train.augment import AugmentConfig

SWITCHES = ("bf16", "compile")
"""Config keys that take ``auto``, ``on`` or ``off``."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Paths are given by the caller, never the environment."""

    data: str = ""
    out: str = "runs/run"
    fold: int = 0
    n_validation: int = 8
    split_seed: int = 0
    holdout: tuple[str, ...] = ()  # patients kept out of training and validation (tested instead), whatever their fold
    seed: int = 42
    epochs: int = 40
    samples_per_epoch: int = 1600
    batch_size: int = 16
    crop_size: int = 0  # train on crop_size x crop_size patches (0 = whole slices); see augment.choose_windows
    fg_fraction: float = 0.5
    vertex_fraction: float = 0.0  # share of samples from tumor-free slices in the top fifth of a volume
    end_fraction: float = 0.0  # share of samples from tumor-free slices within 3 slices of a tumor (past its ends)
    hard_negative_prob: float = 0.0  # a tumor-free slice's crop is centred on bright FLAIR with this probability
    tumor_balance: float = 0.0  # tumor slice weight: (tumor slices of its volume) ** -balance; 1 = per patient
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02
    bce_weight: float = 1.0
    ema_decay: float = 0.0  # > 0: validate, calibrate and save an exponential moving average of the weights
    dice_per_image: bool = False  # Dice term averaged over tumor images instead of pooled (small tumors weigh more)
    patience: int = 0
    device: str = "auto"
    bf16: str = "auto"
    compile: str = "auto"  # torch.compile the training step: auto (long single-process runs), on, off
    threads: int = 0
    max_train_patients: int = 0
    calibrate: bool = True
    rule_from: str = ""  # refit: adopt the rule this run folder chose on its validation patients ("{fold}" = this fold)
    sync_bn: bool = False  # SyncBatchNorm across processes in distributed training (CUDA only)
    init_weights: str = ""  # fine-tune from these weights ("{fold}" = this fold); never ones that saw its test set
    distill_teachers: tuple[str, ...] = ()  # weights whose mean probability enters the target; "{fold}" = this fold
    distill_weight: float = 0.5  # share of the target from the teachers (the rest from the annotation)
    model: UNetConfig = field(default_factory=UNetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.samples_per_epoch >= self.batch_size, "samples_per_epoch must be >= batch_size"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm)"),
            (
                self.crop_size == 0 or 32 <= self.crop_size <= 256 and self.crop_size % 16 == 0,
                "crop_size must be 0 or a multiple of 16 in [32, 256]",
            ),
            (0.0 <= self.fg_fraction <= 1.0, "fg_fraction must be in [0, 1]"),
            (
                self.vertex_fraction >= 0.0 and self.fg_fraction + self.vertex_fraction <= 1.0,
                "vertex_fraction must be >= 0 and fg_fraction + vertex_fraction <= 1",
            ),
            (
                self.end_fraction >= 0.0 and self.fg_fraction + self.vertex_fraction + self.end_fraction <= 1.0,
                "end_fraction must be >= 0 and fg_fraction + vertex_fraction + end_fraction <= 1",
            ),
            (0.0 <= self.hard_negative_prob <= 1.0, "hard_negative_prob must be in [0, 1]"),
            (0.0 <= self.tumor_balance <= 1.0, "tumor_balance must be in [0, 1]"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1) (0 = no weight average)"),
            (
                self.n_validation >= 1 or self.n_validation == 0 and bool(self.rule_from),
                "n_validation must be >= 1, or 0 with rule_from (a refit adopts a rule chosen elsewhere)",
            ),
            (
                not (self.rule_from and self.calibrate),
                "rule_from and calibrate both choose the post-processing: set calibrate: false with rule_from",
            ),
            (self.n_validation >= 1 or not self.patience, "patience (early stop) needs validation patients"),
            *((getattr(self, key) in ("auto", "on", "off"), f"{key} must be auto, on or off") for key in SWITCHES),
            (
                isinstance(self.holdout, tuple) and all(isinstance(p, str) for p in self.holdout),
                "holdout must be a list of patient names",
            ),
            (
                isinstance(self.distill_teachers, tuple) and all(isinstance(p, str) for p in self.distill_teachers),
                "distill_teachers must be a list of weights files",
            ),
            (0.0 < self.distill_weight <= 1.0, "distill_weight must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise LggsegError(f"config: {message}")

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (``samples_per_epoch // batch_size``; the global batch)."""
        return self.samples_per_epoch // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise LggsegError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise LggsegError(f"{where}: {exc}") from None


def config_from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    values = dict(values)
    for key in SWITCHES:  # YAML 1.1 reads a bare on / off as true / false
        if isinstance(values.get(key), bool):
            values[key] = "on" if values[key] else "off"
    for key in ("holdout", "distill_teachers"):
        if isinstance(values.get(key), list):
            values[key] = tuple(str(name) for name in values[key])
    model = _build(UNetConfig, values.pop("model", {}) or {}, f"{where} [model]")
    aug_values = dict(values.pop("augment", {}) or {})
    for key in ("scale", "gamma_range"):
        if key in aug_values:
            aug_values[key] = tuple(aug_values[key])
    augment = _build(AugmentConfig, aug_values, f"{where} [augment]")
    return _build(TrainConfig, {**values, "model": model, "augment": augment}, where)


EXTENDS = "extends"  # config key: the YAML file (relative to this one) whose values this file changes


def load_config(path: str | Path | None) -> TrainConfig:
    """Load a YAML config file (None -> defaults).

    A file may start from another one: ``extends: base.yaml`` (a path relative to the file) takes
    every value of the base, then this file's values replace the base's; the ``model`` and
    ``augment`` sections merge key by key. Bases may extend further bases.
    """
    if path is None:
        return TrainConfig()
    path = Path(path)
    return config_from_dict(_resolved_values(path, ()), str(path))


def _resolved_values(path: Path, children: tuple[Path, ...]) -> dict[str, Any]:
    """The values of ``path`` over those of the chain of files it extends."""
    values = _read_mapping(path, children)
    base = values.pop(EXTENDS, None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise LggsegError(f"{path}: '{EXTENDS}' must name one YAML file")
    base_path = path.parent / base
    chain = (*children, path)
    if any(base_path.resolve() == p.resolve() for p in chain):
        raise LggsegError(f"{path}: '{EXTENDS}: {base}' goes round in a circle")
    return _merged(_resolved_values(base_path, chain), values)


def _read_mapping(path: Path, children: tuple[Path, ...]) -> dict[str, Any]:
    import yaml

    extended_by = f" (extended by {children[-1]})" if children else ""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise LggsegError(f"{path}: config file not found{extended_by}") from None
    except IsADirectoryError:
        raise LggsegError(f"{path}: is a folder, not a YAML config file{extended_by}") from None
    except OSError as exc:
        raise LggsegError(f"{path}: cannot read the config ({exc.strerror or exc}){extended_by}") from None
    except UnicodeDecodeError:
        raise LggsegError(f"{path}: not a text (UTF-8) YAML file{extended_by}") from None
    except yaml.YAMLError as exc:
        raise LggsegError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise LggsegError(f"{path}: the config must be a mapping of keys to values")
    return values


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested mappings (``model``, ``augment``) merge key by key."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def dump_config(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
