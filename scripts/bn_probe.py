"""Is a finished network's BatchNorm tuned to the patches it trained on? Validation patients only.

A U-Net trained on patches (``crop_size`` > 0) keeps BatchNorm running statistics of patches, yet
predicts whole slices. This script re-estimates those statistics (a cumulative average over
batches, the weights untouched) on two inputs drawn from the run's *training* patients:

* ``whole slices``: every training slice, normalised as at inference, in order;
* ``patches``: training batches drawn and augmented exactly as the run's recipe draws them
  (``--batches`` batches, for each ``--seeds`` seed).

For each it prints the per-patient 3D Dice of the run's validation patients at threshold 0.5
(as the training log measures it, no post-processing), beside the statistics as trained. If the
whole-slice statistics score far below the trained ones while re-estimated patch statistics do
not, the network's normalisation is specific to patches. Test patients are not read.

Usage (about 3 minutes for fold 0 on 2 idle CPU cores)::

    python scripts/bn_probe.py --data ../shared/data/lgg/kaggle_3m --run docs/cv/fold_0/run
    python scripts/bn_probe.py --data ../shared/data/lgg/kaggle_3m --run RUN --checkpoint  # the last epoch
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from lggseg.data.dataset import Volume, index_dataset, load_volume
from lggseg.errors import LggsegError, run_script
from lggseg.infer import runtime
from lggseg.infer.preprocess import volume_batches
from lggseg.io import atomic
from lggseg.model.bundle import load_weights
from lggseg.model.unet import UNet
from lggseg.train.augment import augment
from lggseg.train.config import TrainConfig, load_config
from lggseg.train.epoch import validate
from lggseg.train.run_folder import RunFolder
from lggseg.train.slices import SliceBank, draw_epoch


def reestimate_batchnorm(model: UNet, batches: Iterable[torch.Tensor], bf16: bool) -> None:
    """Replace every BatchNorm's running mean and variance by their average over ``batches``
    (each ``(B, C, H, W)`` normalised network input); the weights are not touched."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for x in batches:
            with runtime.autocast(torch.device("cpu"), bf16):
                model(x.contiguous(memory_format=torch.channels_last))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def whole_slices(volumes: list[Volume], context: int, batch_size: int = 16) -> Iterator[torch.Tensor]:
    """Every slice of ``volumes`` as inference feeds it: ``(b, 3 (2c + 1), 256, 256)`` batches."""
    for volume in volumes:
        for _, x in volume_batches(volume.images, context, batch_size):
            yield x


def recipe_patches(bank: SliceBank, cfg: TrainConfig, n_batches: int, seed: int) -> Iterator[torch.Tensor]:
    """``n_batches`` training batches drawn and augmented as ``cfg`` draws them (patches when it crops)."""
    generator = torch.Generator().manual_seed(seed)
    order = draw_epoch(
        bank,
        n_batches * cfg.batch_size,
        cfg.fg_fraction,
        generator,
        cfg.vertex_fraction,
        cfg.tumor_balance,
        cfg.end_fraction,
    )
    for i in range(n_batches):
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        raw, stats = bank.inputs(idx, cfg.model.context_slices)
        x, _ = augment(raw, bank.targets(idx), stats, cfg.augment, generator, cfg.crop_size, cfg.hard_negative_prob)
        yield x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="run folder: best.safetensors, split.json, config.yaml")
    parser.add_argument("--checkpoint", action="store_true", help="probe the last epoch (checkpoint.safetensors)")
    parser.add_argument("--batches", type=int, default=150, help="patch batches per re-estimate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    run = RunFolder(args.run)
    for path in (run.best, run / RunFolder.SPLIT, run / "config.yaml"):
        if not path.exists():
            raise LggsegError(f"{run.path}: not a finished run folder (no {path.name})")
    cfg = load_config(run / "config.yaml")
    split = json.loads((run / RunFolder.SPLIT).read_text())
    named = index_dataset(args.data).by_name()
    missing = [n for n in split["train"] + split["validation"] if n not in named]
    if missing:
        raise LggsegError(f"{args.data}: lacks {len(missing)} patient(s) of {run.path}, e.g. {missing[0]}")
    train = [load_volume(named[n]) for n in split["train"]]
    val = [load_volume(named[n]) for n in split["validation"]]
    runtime.tune_malloc()
    bf16 = runtime.use_bf16(torch.device("cpu"), "auto")
    model = load_weights(run.best).model
    if args.checkpoint:
        model.load_state_dict(run.checkpoint_tensors())
    model = model.to(memory_format=torch.channels_last)
    trained = {k: v.clone() for k, v in model.state_dict().items()}

    def score(label: str) -> float:
        dice = validate(model, val, torch.device("cpu"), bf16, cfg.bce_weight)["val_dice"]
        print(f"{label:<40} validation Dice {dice:.4f} ({len(val)} patients)", flush=True)
        return dice

    results = {"as trained": score("BatchNorm statistics as trained")}
    reestimate_batchnorm(model, whole_slices(train, cfg.model.context_slices), bf16)
    results["whole slices"] = score(f"re-estimated on {len(train)} patients' whole slices")
    bank = SliceBank.from_volumes(train)
    for seed in args.seeds:
        model.load_state_dict(trained)
        reestimate_batchnorm(model, recipe_patches(bank, cfg, args.batches, seed), bf16)
        results[f"patches, seed {seed}"] = score(f"re-estimated on {args.batches} recipe batches, seed {seed}")
    if args.out:
        report = {"run": str(run.path), "checkpoint": args.checkpoint, "validation_dice": results}
        atomic.write_text(args.out, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
