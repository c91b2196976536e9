"""How symmetric is each tumor about the head's midline, and does the mirror input lose where it is?

The mirror input (recipe v7, ``docs/cv_v7``) shows each pixel with its contralateral twin, so that a
bright region the other hemisphere repeats can be told from a one-sided lesion. A tumor that
crosses the midline is its own twin there. This script measures, per patient, the **symmetric
share**: the fraction of annotated tumor voxels whose mirror image about the volume's midline
(:func:`lggseg.infer.preprocess.volume_midline`, the same mirror the network sees) is also tumor.
It then sets each candidate CV's out-of-fold Dice against a baseline's, by that share.

A CV given as ``A+B`` is several seeds of one recipe; each patient's Dice is averaged over them,
and only patients that every folder scored count (``fold_dice`` in ``scripts/cv_compare.py``).
The annotation is read only to describe the test patients after the fact; nothing is chosen with it.

Usage (about a minute for 100 patients)::

    python scripts/midline_symmetry.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv_v7 \\
        --baseline docs/cv+docs/cv_v3s43 --out docs/cv_v7/midline_symmetry.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from cv_compare import dice_by_fold, finished_folds, merged, recipe_folders  # scripts/cv_compare.py, beside this file

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.errors import LggsegError, run_script
from lggseg.evaluation.cohort import paired_summary
from lggseg.infer.preprocess import mirrored_columns, volume_midline
from lggseg.io import atomic

SYMMETRIC = 0.05
"""A tumor counts as crossing the midline when more than this share of it mirrors onto tumor."""


def symmetric_share(truth: np.ndarray, midline: float) -> float:
    """``(Z, H, W)`` bool annotation -> the share of its voxels whose mirror about ``midline`` is tumor too."""
    total = int(truth.sum())
    if total == 0:
        return 0.0
    return float((truth & mirrored_columns(truth, midline, axis=-1)).sum() / total)


def group_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n_patients": 0}
    diffs = [r["difference"] for r in rows]
    return {
        "n_patients": len(rows),
        "median_tumor_voxels": statistics.median(r["tumor_voxels"] for r in rows),
        "mean_dice": statistics.fmean(r["dice"] for r in rows),
        "mean_dice_baseline": statistics.fmean(r["dice_baseline"] for r in rows),
        "paired_difference": paired_summary(diffs).describe(),
    }


def group_gap(first: list[float], second: list[float], draws: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of ``first`` minus mean of ``second`` (two independent groups of paired differences), with
    a 95% bootstrap interval that resamples each group on its own."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(first), np.asarray(second)
    gaps = rng.choice(a, (draws, a.size)).mean(1) - rng.choice(b, (draws, b.size)).mean(1)
    low, high = np.percentile(gaps, [2.5, 97.5])
    return {"gap": float(a.mean() - b.mean()), "ci95_low": float(low), "ci95_high": float(high)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="kaggle_3m-style folder with masks")
    parser.add_argument("--cv", required=True, help="the candidate's CV folder (or several seeds joined by +)")
    parser.add_argument("--baseline", required=True, help="the baseline's CV folder (or several seeds joined by +)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    candidate, reference = recipe_folders(args.cv), recipe_folders(args.baseline)
    folds = finished_folds(candidate + reference)
    if len(folds) < 5:
        raise LggsegError(f"{len(folds)} fold(s) finished in every folder; this study needs all five")
    dice, baseline = merged(dice_by_fold(candidate, reference, folds))
    patients = sorted(dice)
    found = index_dataset(args.data).by_name()
    missing = [p for p in patients if p not in found]
    if missing:
        raise LggsegError(f"{args.data}: {len(missing)} patient(s) of the CVs not found, e.g. {missing[0]}")
    rows = []
    for name in patients:
        volume = load_volume(found[name])
        truth = volume.require_masks()
        midline = volume_midline(volume.images)
        share = symmetric_share(truth, midline)
        rows.append(
            {
                "patient": name,
                "tumor_voxels": int(truth.sum()),
                "midline": midline,
                "crosses_midline": share > SYMMETRIC,
                "symmetric_share": round(share, 4),
                "dice": round(dice[name], 4),
                "dice_baseline": round(baseline[name], 4),
                "difference": round(dice[name] - baseline[name], 4),
            }
        )
    crossing = [r for r in rows if r["crosses_midline"]]
    one_sided = [r for r in rows if not r["crosses_midline"]]
    report = {
        "cv": args.cv,
        "baseline": args.baseline,
        "symmetric_threshold": SYMMETRIC,
        "crossing_midline": group_summary(crossing),
        "one_sided": group_summary(one_sided),
        "crossing_minus_one_sided": group_gap([r["difference"] for r in crossing], [r["difference"] for r in one_sided])
        if crossing and one_sided
        else None,
        "patients": sorted(rows, key=lambda r: -r["symmetric_share"]),
    }
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    for label in ("crossing_midline", "one_sided"):
        group = report[label]
        if group["n_patients"]:
            print(
                f"{label}: {group['n_patients']} patients, {group['mean_dice']:.3f} against "
                f"{group['mean_dice_baseline']:.3f}, paired {group['paired_difference']}"
            )
    if report["crossing_minus_one_sided"]:
        gap = report["crossing_minus_one_sided"]
        print(f"crossing - one-sided: {gap['gap']:+.3f} ({gap['ci95_low']:+.3f} to {gap['ci95_high']:+.3f})")
    for r in report["patients"][:5]:
        print(f"  {r['patient']}: share {r['symmetric_share']:.2f}, {r['tumor_voxels']} voxels, {r['difference']:+.3f}")
    return 0


if __name__ == "__main__":
    run_script(main)
