"""Two cross-validations of the same canonical folds, fold by fold: a new recipe against an old one.

    python scripts/cv_compare.py docs/cv docs/cv_v2
    python scripts/cv_compare.py docs/cv_v7+docs/cv_v7s43 docs/cv+docs/cv_v3s43   # two seeds each

One row per fold that both have finished: each recipe's mean / median / min per-patient Dice and
false-positive rate on tumor-free slices (``fold_K/test/metrics.json``), and the paired difference
new - old on the same test patients (mean, 95% bootstrap interval with patients resampled, how many
improved). A last row pools the patients of every fold both have finished; a second table pools
them by annotated tumor size (:data:`lggseg.evaluation.cohort.SIZE_BINS`). Each recipe is one
training run per fold, so a difference is recipe plus run-to-run noise (docs/ablation/README.md
measured about 0.04 mean Dice from the seed alone on one fold of the short schedule).

A recipe given as ``A+B`` is the same recipe trained with several seeds (one CV folder each): each
patient's Dice is its mean over the seeds, and the false-positive rate pools every seed's tumor-free
slices. It compares recipes in expectation over seeds rather than one draw against another.
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


def seed_mean_dice(reports: list[Path]) -> dict[str, float]:
    """Each patient's Dice averaged over the reports of several seeds (patients all of them scored)."""
    per_seed = [per_patient_dice(report) for report in reports]
    shared = set.intersection(*(set(d) for d in per_seed))
    return {p: statistics.fmean(d[p] for d in per_seed) for p in sorted(shared)}


def pooled(dice: dict[str, float], reports: list[Path]) -> dict:
    """mean / median / min of ``dice`` and the FP rate over the tumor-free slices of ``reports``."""
    empty = false_positive = 0
    for report in reports:
        for row in csv.DictReader((report / "per_patient.csv").open()):
            empty += int(row["n_slices"]) - int(row["n_tumor_slices"])
            false_positive += int(row["n_false_positive_slices"])
    dices = list(dice.values())
    return {
        "n_patients": len(dices),
        "mean_dice": statistics.fmean(dices),
        "median_dice": statistics.median(dices),
        "min_dice": min(dices),
        "false_positive_rate_empty_slices": false_positive / empty,
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


def reports_of(recipe: list[Path], fold: str) -> list[Path]:
    return [cv / fold / "test" for cv in recipe]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("new", help="the new recipe's CV folder (fold_K/test/ per fold), or several joined by +")
    parser.add_argument("old", help="the old recipe's CV folder, or several joined by +")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds (e.g. 2 3 4)")
    args = parser.parse_args(argv)
    new, old = ([Path(p) for p in spec.split("+")] for spec in (args.new, args.old))
    names = ["+".join(cv.name for cv in recipe) for recipe in (new, old)]
    folds = [
        f.name
        for f in sorted(new[0].glob("fold_*"))
        if all((r / "per_patient.csv").exists() for r in reports_of(new + old, f.name))
        and (args.folds is None or int(f.name.split("_")[1]) in args.folds)
    ]
    if not folds:
        print(f"no fold finished in all of {args.new} and {args.old}", file=sys.stderr)
        return 2
    print(
        f"| test patients of | n | {names[0]}: mean / median / min Dice | FP rate "
        f"| {names[1]}: mean / median / min Dice | FP rate "
        f"| {names[0]} - {names[1]}: paired Dice difference (95% CI) |"
    )
    print("|---|---|---|---|---|---|---|")
    new_all: dict[str, float] = {}
    old_all: dict[str, float] = {}
    for fold in folds:
        new_pp, old_pp = (seed_mean_dice(reports_of(recipe, fold)) for recipe in (new, old))
        new_all.update(new_pp)
        old_all.update(old_pp)
        new_m, old_m = (
            json.loads((recipe[0] / fold / "test" / "metrics.json").read_text())
            if len(recipe) == 1
            else pooled(pp, reports_of(recipe, fold))
            for recipe, pp in ((new, new_pp), (old, old_pp))
        )
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| {fold.replace('_', ' ')} | {dice_cells(new_m)} | {old_cells} | {paired(new_pp, old_pp)} |")
    if len(folds) > 1:
        new_m = pooled(new_all, [r for f in folds for r in reports_of(new, f)])
        old_m = pooled(old_all, [r for f in folds for r in reports_of(old, f)])
        label = "folds " + "+".join(f.split("_")[1] for f in folds)
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| **{label}** | {dice_cells(new_m)} | {old_cells} | {paired(new_all, old_all)} |")
    voxels = tumor_voxels([old[0] / f / "test" for f in folds])
    print_by_size(new_all, old_all, voxels, (names[0], names[1]))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    run_script(main)
