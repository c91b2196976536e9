"""The ablation table of issue 10 from the variant folders of ``scripts/ablation.sh``.

    python scripts/ablation_table.py ABL [--speed]

One row per variant and test fold, plus the merged row over both folds once it exists: mean /
median / min per-patient Dice and the false-positive rate on tumor-free slices (each fold's
``test/metrics.json``), and the training minutes of that fold (the epoch times in its
``run/log.csv``; wall time, so a fold that shared the cores reads slower). ``--speed`` adds ms/slice
at batch 1, timed here side by side for every variant's architecture (random weights of the
variant's ``model`` config through the default backend: speed depends on the architecture, not the
weights). Time only on otherwise idle cores.

"vs baseline" is the paired difference in per-patient Dice against the ``baseline`` variant on the
same test patients: its mean, the 95% bootstrap interval of that mean (patients resampled) and how
many patients improved. With 21 patients a fold, only a difference whose interval excludes 0 says
more than the noise of one short run.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def train_minutes(run: Path) -> float:
    """Minutes of training of one fold's run folder (sum of its epochs' seconds)."""
    rows = list(csv.DictReader((run / "log.csv").open()))
    return sum(float(r["seconds"]) for r in rows) / 60


def ms_per_slice(config_yaml: Path, rounds: int = 30) -> float:
    """Median ms of one network call on one 256x256 slice for the architecture in a run's config."""
    import torch

    from lggseg.infer.segmenter import InferenceConfig, Segmenter
    from lggseg.model.bundle import save_weights
    from lggseg.model.unet import UNet
    from lggseg.train.config import load_config

    model_config = load_config(config_yaml).model
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = Path(tmp) / "w.safetensors"
        save_weights(weights, UNet(model_config))
        segmenter = Segmenter.from_weights(weights, InferenceConfig(batch_size=1))
    x = np.random.default_rng(0).standard_normal((1, model_config.in_channels, 256, 256)).astype(np.float32)
    for _ in range(3):
        segmenter.backend(x)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        segmenter.backend(x)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def per_patient_dice(report_dir: Path) -> dict[str, float]:
    rows = csv.DictReader((report_dir / "per_patient.csv").open())
    return {r["patient"]: float(r["dice"]) for r in rows}


def paired_cell(report_dir: Path, baseline_dir: Path) -> str:
    """Mean paired Dice difference against the baseline's report on the same patients, with its interval."""
    from lggseg.evaluation.cohort import paired_summary

    if report_dir == baseline_dir or not (baseline_dir / "per_patient.csv").exists():
        return ""
    mine, base = per_patient_dice(report_dir), per_patient_dice(baseline_dir)
    shared = sorted(set(mine) & set(base))
    return paired_summary([mine[p] - base[p] for p in shared]).describe()


def dice_cells(m: dict) -> str:
    return (
        f"{m['n_patients']} | {m['mean_dice']:.3f} / {m['median_dice']:.3f} / {m['min_dice']:.3f} "
        f"| {m['false_positive_rate_empty_slices']:.1%}"
    )


def rows(variant: Path, speed: str) -> list[str]:
    """The table rows of one variant: each finished fold, then the merged report if any."""
    out = []
    baseline = variant.parent / "baseline"
    folds = sorted(f for f in variant.glob("fold_*") if (f / "test" / "metrics.json").exists())
    for fold in folds:
        m = json.loads((fold / "test" / "metrics.json").read_text())
        minutes = f"{train_minutes(fold / 'run'):.0f}" if (fold / "run" / "log.csv").exists() else "n/a"
        paired = paired_cell(fold / "test", baseline / fold.name / "test")
        out.append(
            f"| {variant.name} | {fold.name.replace('_', ' ')} | {dice_cells(m)} | {paired} | {minutes} | {speed} |"
        )
    if (variant / "metrics.json").exists():
        m = json.loads((variant / "metrics.json").read_text())
        paired = paired_cell(variant, baseline)
        out.append(f"| {variant.name} | **folds 0+1** | {dice_cells(m)} | {paired} | | {speed} |")
    return out or [f"| {variant.name} | no fold finished | | | | | | |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the ablation folder (ABL of scripts/ablation.sh)")
    parser.add_argument("--speed", action="store_true", help="add ms/slice at batch 1 (idle cores only)")
    args = parser.parse_args()
    print(
        "| variant | test patients of | n | mean / median / min Dice | FP rate, tumor-free slices "
        "| vs baseline: mean paired Dice difference (95% CI) | train min | ms/slice, b1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in sorted(p for p in args.root.iterdir() if any(p.glob("fold_*"))):  # variant folders only
        config = next(iter(sorted(variant.glob("fold_*/run/config.yaml"))), None)
        speed = f"{ms_per_slice(config):.1f}" if args.speed and config is not None else ""
        for row in rows(variant, speed):
            print(row)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    main()
