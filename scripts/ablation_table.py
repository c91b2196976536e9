"""The ablation table of issue 10 from the variant folders of ``scripts/ablation.sh``.

    python scripts/ablation_table.py ABL

Per variant: mean / median / min per-patient Dice and the false-positive rate on tumor-free slices
over the two folds' test patients (the merged ``metrics.json``), training minutes per fold (the
epoch times in each fold's ``log.csv``), and ms/slice at batch 1 of the fold-0 network, timed here
side by side (each variant in turn, in this one process, through the default backend).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def train_minutes(variant: Path) -> list[float]:
    """Minutes of training per finished fold (sum of its epochs' seconds; wall time, so a fold that
    shared the cores with other jobs reads slower)."""
    minutes = []
    for log in sorted(variant.glob("fold_*/run/log.csv")):
        if not (log.parent.parent / "test" / "metrics.json").exists():  # not finished
            continue
        rows = list(csv.DictReader(log.open()))
        minutes.append(sum(float(r["seconds"]) for r in rows) / 60)
    return minutes


def ms_per_slice(weights: Path, rounds: int = 30) -> float:
    """Median ms of one network call on one 256x256 slice (default torch backend, warm)."""
    from lggseg.infer.segmenter import InferenceConfig, Segmenter

    segmenter = Segmenter.from_weights(weights, InferenceConfig(batch_size=1))
    channels = segmenter.bundle.config.in_channels
    x = np.random.default_rng(0).standard_normal((1, channels, 256, 256)).astype(np.float32)
    for _ in range(3):
        segmenter.backend(x)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        segmenter.backend(x)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main(root: str) -> None:
    print(
        "| variant | patients | mean / median / min Dice | FP rate, tumor-free slices | train min/fold | ms/slice, b1 |"
    )
    print("|---|---|---|---|---|---|")
    for variant in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        report = variant / "metrics.json"
        if not report.exists():
            print(f"| {variant.name} | not merged yet | | | | |")
            continue
        m = json.loads(report.read_text())
        minutes = train_minutes(variant)
        weights = variant / "fold_0" / "run" / "best.safetensors"
        speed = f"{ms_per_slice(weights):.1f}" if weights.exists() else "n/a"
        print(
            f"| {variant.name} | {m['n_patients']} "
            f"| {m['mean_dice']:.3f} / {m['median_dice']:.3f} / {m['min_dice']:.3f} "
            f"| {m['false_positive_rate_empty_slices']:.1%} | {statistics.fmean(minutes):.0f} | {speed} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/ablation_table.py ABL")
    main(sys.argv[1])
