"""Two cross-validations of the same canonical folds, fold by fold: a new recipe against an old one.

    python scripts/cv_compare.py docs/cv docs/cv_v2
    python scripts/cv_compare.py docs/cv_v7+docs/cv_v7s43 docs/cv+docs/cv_v3s43   # two seeds each

One row per fold that every folder has finished: each recipe's mean / median / min per-patient Dice and
false-positive rate on tumor-free slices (``fold_K/test/metrics.json``), and the paired difference
new - old on the same test patients (mean, 95% bootstrap interval with patients resampled, how many
improved). A last row pools the patients of every fold shown; a second table pools
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


def recipe_folders(spec: str) -> list[Path]:
    """``A+B+...`` -> the CV folders of one recipe's seeds."""
    return [Path(p) for p in spec.split("+")]


def fold_dice(new: list[Path], old: list[Path], fold: str) -> tuple[dict[str, float], dict[str, float]]:
    """Each recipe's per-patient Dice on ``fold``, averaged over its seeds (CV folders).

    Only the patients that every folder of both recipes scored are kept, so that each mean and the
    paired difference cover the same patients; any patient left out is named on stderr.
    """
    per_cv = {cv: per_patient_dice(cv / fold / "test") for cv in new + old}
    shared = sorted(set.intersection(*(set(d) for d in per_cv.values())))
    left_out = sorted(set().union(*per_cv.values()) - set(shared))
    if left_out:
        print(f"{fold}: {len(left_out)} patient(s) not scored in every folder, left out: {left_out}", file=sys.stderr)
    new_pp = {p: statistics.fmean(per_cv[cv][p] for cv in new) for p in shared}
    old_pp = {p: statistics.fmean(per_cv[cv][p] for cv in old) for p in shared}
    return new_pp, old_pp


FoldDice = dict[str, tuple[dict[str, float], dict[str, float]]]
"""fold name -> (new recipe's, old recipe's) per-patient Dice on that fold, as :func:`fold_dice` gives."""


def dice_by_fold(new: list[Path], old: list[Path], folds: list[str]) -> FoldDice:
    return {fold: fold_dice(new, old, fold) for fold in folds}


def merged(by_fold: FoldDice) -> tuple[dict[str, float], dict[str, float]]:
    """Both recipes' per-patient Dice over all folds of ``by_fold``."""
    return (
        {p: d for new_pp, _ in by_fold.values() for p, d in new_pp.items()},
        {p: d for _, old_pp in by_fold.values() for p, d in old_pp.items()},
    )


def finished_folds(folders: list[Path], only: list[int] | None = None) -> list[str]:
    """The ``fold_K`` names whose test report every folder holds (optionally only folds ``only``)."""
    return [
        f.name
        for f in sorted(folders[0].glob("fold_*"))
        if all((cv / f.name / "test" / "per_patient.csv").exists() for cv in folders)
        and (only is None or int(f.name.split("_")[1]) in only)
    ]


def pooled(dice: dict[str, float], reports: list[Path]) -> dict:
    """mean / median / min of ``dice`` and the FP rate over the tumor-free slices of ``reports``
    (only the patients of ``dice``; several seeds' reports pool every seed's slices)."""
    empty = false_positive = 0
    for report in reports:
        for row in csv.DictReader((report / "per_patient.csv").open()):
            if row["patient"] in dice:
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


def fold_metrics(recipe: list[Path], fold: str, dice: dict[str, float]) -> dict:
    """One recipe's row on one fold: its own ``metrics.json`` when it is one CV folder that scored
    exactly the patients of ``dice``, else :func:`pooled` over its seeds' reports."""
    if len(recipe) == 1:
        metrics = json.loads((recipe[0] / fold / "test" / "metrics.json").read_text())
        if metrics["n_patients"] == len(dice):
            return metrics
    return pooled(dice, [cv / fold / "test" for cv in recipe])


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
    parser.add_argument("new", help="the new recipe's CV folder (fold_K/test/ per fold), or several joined by +")
    parser.add_argument("old", help="the old recipe's CV folder, or several joined by +")
    parser.add_argument(
        "--folds", type=int, nargs="+", default=None, help="only these folds (e.g. 2 3 4) of those all have finished"
    )
    args = parser.parse_args(argv)
    new, old = recipe_folders(args.new), recipe_folders(args.old)
    names = ["+".join(cv.name for cv in recipe) for recipe in (new, old)]
    folds = finished_folds(new + old, args.folds)
    if not folds:
        print(f"no fold finished in all of {args.new} and {args.old}", file=sys.stderr)
        return 2
    print(
        f"| test patients of | n | {names[0]}: mean / median / min Dice | FP rate "
        f"| {names[1]}: mean / median / min Dice | FP rate "
        f"| {names[0]} - {names[1]}: paired Dice difference (95% CI) |"
    )
    print("|---|---|---|---|---|---|---|")
    by_fold = dice_by_fold(new, old, folds)
    for fold, (new_pp, old_pp) in by_fold.items():
        new_m, old_m = fold_metrics(new, fold, new_pp), fold_metrics(old, fold, old_pp)
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| {fold.replace('_', ' ')} | {dice_cells(new_m)} | {old_cells} | {paired(new_pp, old_pp)} |")
    new_all, old_all = merged(by_fold)
    if len(folds) > 1:
        new_m = pooled(new_all, [cv / f / "test" for f in folds for cv in new])
        old_m = pooled(old_all, [cv / f / "test" for f in folds for cv in old])
        label = "folds " + "+".join(f.split("_")[1] for f in folds)
        old_cells = dice_cells(old_m).split(" | ", 1)[1]
        print(f"| **{label}** | {dice_cells(new_m)} | {old_cells} | {paired(new_all, old_all)} |")
    voxels = tumor_voxels([old[0] / f / "test" for f in folds])
    print_by_size(new_all, old_all, voxels, (names[0], names[1]))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    run_script(main)
