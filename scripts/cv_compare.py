"""Two cross-validations of the same canonical folds, fold by fold: a new recipe against an old one.

    python scripts/cv_compare.py docs/cv docs/cv_v2

One row per fold that both have finished: each recipe's mean / median / min per-patient Dice and
false-positive rate on tumor-free slices (``fold_K/test/metrics.json``), and the paired difference
new - old on the same test patients (mean, 95% bootstrap interval with patients resampled, how many
improved). A last row pools the patients of every fold both have finished; a second table pools
them by annotated tumor size (:data:`lggseg.evaluation.cohort.SIZE_BINS`). Each recipe is one
training run per fold, so a difference is recipe plus run-to-run noise (docs/ablation/README.md
measured about 0.04 mean Dice from the seed alone on one fold of the short schedule).
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import statistics
import sys
from pathlib import Path

from ablation_table import dice_cells, per_patient_dice  # scripts/ablation_table.py, beside this file

from lggseg.errors import run_script
from lggseg.evaluation.cohort import SIZE_BINS, paired_summary, size_group


def paired(new: dict[str, float], old: dict[str, float]) -> str:
    shared = sorted(set(new) & set(old))
    return paired_summary([new[p] - old[p] for p in shared]).describe()


def pooled(reports: list[Path]) -> dict:
    """mean / median / min Dice and FP rate over the patients of several fold reports."""
    rows = []
    for report in reports:
        for row in csv.DictReader((report / "per_patient.csv").open()):
            rows.append(
                {
                    "dice": float(row["dice"]),
                    "n_empty_slices": int(row["n_slices"]) - int(row["n_tumor_slices"]),
                    "n_false_positive_slices": int(row["n_false_positive_slices"]),
                }
            )
    empty = sum(r["n_empty_slices"] for r in rows)
    dices = [r["dice"] for r in rows]
    return {
        "n_patients": len(rows),
        "mean_dice": statistics.fmean(dices),
        "median_dice": statistics.median(dices),
        "min_dice": min(dices),
        "false_positive_rate_empty_slices": sum(r["n_false_positive_slices"] for r in rows) / empty,
    }


def tumor_voxels(reports: list[Path]) -> dict[str, int]:
    """Each patient's annotated tumor volume in voxels, from the fold reports' per_patient.csv."""
    return {
        row["patient"]: int(row["volume_true"])
        for report in reports
        for row in csv.DictReader((report / "per_patient.csv").open())
    }


def print_by_size(new: dict[str, float], old: dict[str, float], voxels: dict[str, int], names: tuple[str, str]) -> None:
    """Mean Dice of each recipe and the paired difference, per tumor-size group."""
    print(
        f"\n| annotated tumor voxels | n | {names[0]}: mean Dice | {names[1]}: mean Dice | paired difference (95% CI) |"
    )
    print("|---|---|---|---|---|")
    for _, label in SIZE_BINS:
        group = sorted(p for p in set(new) & set(old) if size_group(voxels[p]) == label)
        if group:
            new_mean = statistics.fmean(new[p] for p in group)
            old_mean = statistics.fmean(old[p] for p in group)
            diff = paired_summary([new[p] - old[p] for p in group]).describe()
            print(f"| {label} | {len(group)} | {new_mean:.3f} | {old_mean:.3f} | {diff} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("new", type=Path, help="the new recipe's CV folder (fold_K/test/ per fold)")
    parser.add_argument("old", type=Path, help="the old recipe's CV folder")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds (e.g. 2 3 4)")
    args = parser.parse_args(argv)
    folds = [
        f.name
        for f in sorted(args.new.glob("fold_*"))
        if (f / "test" / "per_patient.csv").exists()
        and (args.old / f.name / "test" / "per_patient.csv").exists()
        and (args.folds is None or int(f.name.split("_")[1]) in args.folds)
    ]
    if not folds:
        print(f"no fold finished in both {args.new} and {args.old}", file=sys.stderr)
        return 2
    print(
        f"| test patients of | n | {args.new.name}: mean / median / min Dice | FP rate "
        f"| {args.old.name}: mean / median / min Dice | FP rate "
        f"| {args.new.name} - {args.old.name}: paired Dice difference (95% CI) |"
    )
    print("|---|---|---|---|---|---|---|")
    new_all: dict[str, float] = {}
    old_all: dict[str, float] = {}
    for fold in folds:
        new_dir, old_dir = args.new / fold / "test", args.old / fold / "test"
        new_m, old_m = (json.loads((d / "metrics.json").read_text()) for d in (new_dir, old_dir))
        new_pp, old_pp = per_patient_dice(new_dir), per_patient_dice(old_dir)
        new_all.update(new_pp)
        old_all.update(old_pp)
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| {fold.replace('_', ' ')} | {dice_cells(new_m)} | {old_cells} | {paired(new_pp, old_pp)} |")
    if len(folds) > 1:
        new_m = pooled([args.new / f / "test" for f in folds])
        old_m = pooled([args.old / f / "test" for f in folds])
        label = "folds " + "+".join(f.split("_")[1] for f in folds)
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| **{label}** | {dice_cells(new_m)} | {old_cells} | {paired(new_all, old_all)} |")
    voxels = tumor_voxels([args.old / f / "test" for f in folds])
    print_by_size(new_all, old_all, voxels, (args.new.name, args.old.name))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    run_script(main)
