"""Where the out-of-fold errors of a cross-validation come from, and whether other recipes share them.

For every fold of a CV folder, the fold model predicts its test patients, its own rule (chosen by
its validation patients, stored in its weights) makes the mask, and every wrong voxel is put down
to one cause (:mod:`lggseg.evaluation.error_budget`): confident or unsure false-positive components
apart from the tumor, false positives attached to it, and missed tumor the network gave under 0.1,
under the threshold, or that post-processing removed. For each cause the report gives the mean Dice
the 100 patients would score without it: a bound on what fixing that cause could win, not an
estimate (it looks at the truth and chooses nothing).

``--compare`` adds other CV folders of the same patients (their ``per_patient.csv``, no inference):
how strongly the recipes' per-patient Dice agree, the mean an oracle would reach by taking each
patient's best recipe, and the patients every recipe fails. ``--gallery`` draws, for the weakest
patients, the slice with the most wrong voxels.

Usage (about 3 minutes for 100 patients on 2 idle CPU cores)::

    python scripts/error_budget.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv \
        --compare docs/cv_v2 docs/cv_v4 docs/cv_v5 docs/cv_v3swa --out budget.json --gallery worst.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.errors import run_script
from lggseg.evaluation import error_budget
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.io.progress import make_progress
from lggseg.model.bundle import load_weights

FAILED = 0.7
"""A patient below this Dice in every compared recipe counts as failed by all of them."""


def per_patient_dice(cv: Path) -> dict[str, float]:
    with (cv / "per_patient.csv").open() as handle:
        return {row["patient"]: float(row["dice"]) for row in csv.DictReader(handle)}


def agreement(folders: list[Path]) -> dict[str, Any]:
    """How the per-patient Dice of several CVs of the same patients agree."""
    tables = [per_patient_dice(folder) for folder in folders]
    patients = sorted(set.intersection(*(set(table) for table in tables)))
    dice = np.array([[table[p] for table in tables] for p in patients])  # (patients, recipes)
    corr = np.corrcoef(dice.T)
    failed = [i for i, row in enumerate(dice) if (row < FAILED).all()]
    return {
        "recipes": [str(folder) for folder in folders],
        "n_patients": len(patients),
        "mean_dice": [round(float(m), 4) for m in dice.mean(0)],
        "pairwise_correlation": {
            "min": float(corr[np.triu_indices(len(folders), 1)].min()),
            "matrix": corr.round(3).tolist(),
        },
        "oracle_best_recipe_per_patient_mean_dice": float(dice.max(1).mean()),
        f"patients_below_{FAILED}_in_every_recipe": [patients[i] for i in failed],
        "their_mean_dice": [round(float(m), 3) for m in dice[failed].mean(0)] if failed else [],
    }


def out_of_fold(data: Path, cv: Path) -> dict[str, dict[str, Any]]:
    """Each test patient's budget, plus what the gallery draws (FLAIR, truth and mask of its worst slice)."""
    runs = [weights.parent for weights in cv_fold_weights(cv)]
    named = index_dataset(data).by_name()
    tests = {run: json.loads((run / "split.json").read_text())["test"] for run in runs}
    results: dict[str, dict[str, Any]] = {}
    with make_progress() as bar:
        task = bar.add_task("patients", total=sum(len(t) for t in tests.values()), info="")
        for run, names in tests.items():
            bundle = load_weights(run / "best.safetensors")
            segmenter = Segmenter(bundle, config=InferenceConfig())
            for name in names:
                volume = load_volume(named[name])
                truth = volume.require_masks()
                prob, mask = segmenter.segment_with_probabilities(volume.images)
                budget = error_budget.error_budget(prob, mask, truth, bundle.post.threshold)
                worst = int((mask ^ truth).reshape(len(mask), -1).sum(1).argmax())
                results[name] = {
                    "fold": run.parent.name,
                    "dice": error_budget.dice_without(budget),
                    "budget": budget,
                    "slice": (worst, volume.images[worst, ..., 1], truth[worst], mask[worst]),
                }
                bar.advance(task)
    return results


def gallery(results: dict[str, dict[str, Any]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        z, flair, truth, mask = results[name]["slice"]
        budget = results[name]["budget"]
        cause = max(error_budget.CAUSES, key=lambda c: budget[c])
        ax.imshow(flair, cmap="gray")
        for outline, colour in ((truth, "lime"), (mask, "red")):
            if outline.any():
                ax.contour(outline, [0.5], colors=colour, linewidths=1)
        ax.set_title(f"{name[:12]} z{z}\nDice {results[name]['dice']:.2f}, most: {cause}", fontsize=8)
    fig.suptitle("weakest patients, slice with the most wrong voxels (green: annotation, red: prediction)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder: fold_K/run/{best.safetensors,split.json}")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other CV folders of the same patients")
    parser.add_argument("--gallery", type=Path, help="PNG of the weakest patients' worst slices")
    parser.add_argument("--worst", type=int, default=8, help="how many patients the gallery draws")
    args = parser.parse_args(argv)
    if not cv_fold_weights(args.cv):
        print(f"error: {args.cv}: no fold_K/run/best.safetensors", file=sys.stderr)
        return 2
    for folder in args.compare:
        if not (folder / "per_patient.csv").is_file():
            print(f"error: {folder}: no per_patient.csv", file=sys.stderr)
            return 2
    results = out_of_fold(args.data, args.cv)
    summary = error_budget.summarize([r["budget"] for r in results.values()])
    report: dict[str, Any] = {
        "cv": str(args.cv),
        "summary": summary,
        "per_patient": {n: {"fold": r["fold"], "dice": r["dice"], **r["budget"]} for n, r in sorted(results.items())},
    }
    if args.compare:
        report["agreement"] = agreement([args.cv, *args.compare])
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    if args.gallery:
        gallery(results, sorted(results, key=lambda n: results[n]["dice"])[: args.worst], args.gallery)
    print(f"{summary['n_patients']} patients, mean Dice {summary['mean_dice']:.4f}; without each cause:")
    for cause, row in summary["causes"].items():
        print(
            f"  {cause:22s} {row['voxels']:8d} voxels  -> {row['mean_dice_without']:.4f} "
            f"({row['mean_dice_gain']:+.4f}; {row['patients_losing_over_0.05']} patients lose > 0.05)"
        )
    if args.compare:
        a = report["agreement"]
        print(
            f"recipes agree: per-patient Dice correlation >= {a['pairwise_correlation']['min']:.2f}; "
            f"best recipe per patient (oracle) {a['oracle_best_recipe_per_patient_mean_dice']:.4f}; "
            f"below {FAILED} in every recipe: {len(a[f'patients_below_{FAILED}_in_every_recipe'])}"
        )
    return 0


if __name__ == "__main__":
    run_script(main)
