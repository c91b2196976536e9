"""Does mirror test-time augmentation help? Out of fold over a cross-validation, with and without it.

For every fold of a CV folder (``CV/fold_K/run/best.safetensors`` and its ``split.json``), the fold
model predicts its validation and its test patients twice: as the default model does (one pass) and
with left-right mirror TTA (the mean of the image's and its mirror's probabilities, two passes).
For each mode the post-processing is chosen anew on the fold's validation patients, exactly as
training does (:func:`lggseg.train.calibrate.select_rule` over :data:`~lggseg.train.calibrate.RULES`);
the fold's test patients are then scored with it. Test patients choose nothing. The report pools the
test patients of all folds present (docs/protocol.md: per-patient 3D Dice) and pairs the two modes.

Usage (about 6 minutes for 5 folds on 2 idle CPU cores)::

    python scripts/tta_eval.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --out tta.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from lggseg.data.dataset import PatientFiles, index_dataset, load_volume
from lggseg.errors import run_script
from lggseg.evaluation import metrics
from lggseg.evaluation.cohort import headline, paired_summary
from lggseg.infer import postprocess
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.model.bundle import load_weights
from lggseg.train.calibrate import RULES, score, select_rule

MODES = ("none", "flip")


def fold_results(named: dict[str, PatientFiles], run: Path, threads: int) -> dict[str, dict[str, Any]]:
    """Per mode: the rule chosen on validation and the test patients' Dice and false-positive slices."""
    split = json.loads((run / "split.json").read_text())
    bundle = load_weights(run / "best.safetensors")
    volumes = {role: [load_volume(named[name]) for name in split[role]] for role in ("validation", "test")}
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        segmenter = Segmenter(dataclasses.replace(bundle, tta=mode), config=InferenceConfig(threads=threads))
        probs = {role: [segmenter.probabilities(v.images) for v in vols] for role, vols in volumes.items()}
        truths = {role: [v.require_masks() for v in vols] for role, vols in volumes.items()}
        chosen = select_rule([score(probs["validation"], truths["validation"], rule) for rule in RULES])
        per_patient = {}
        for volume, prob, truth in zip(volumes["test"], probs["test"], truths["test"]):
            mask = postprocess.apply(prob, chosen.rule)
            fp, empty = metrics.false_positive_slices(mask, truth)
            per_patient[volume.name] = {"dice": metrics.dice(mask, truth), "fp_slices": fp, "empty_slices": empty}
        out[mode] = {"rule": chosen.rule.to_dict(), "val_mean_dice": chosen.mean_dice, "test": per_patient}
    return out


def summary(per_patient: dict[str, dict[str, float]]) -> dict[str, float]:
    dices = [row["dice"] for row in per_patient.values()]
    fp = sum(row["fp_slices"] for row in per_patient.values())
    empty = sum(row["empty_slices"] for row in per_patient.values())
    return {
        "n_patients": len(dices),
        "mean_dice": statistics.fmean(dices),
        "median_dice": statistics.median(dices),
        "min_dice": min(dices),
        "false_positive_rate_empty_slices": fp / empty if empty else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder with fold_K/run/best.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    runs = [weights.parent for weights in cv_fold_weights(args.cv)]
    if not runs:
        print(f"error: {args.cv}: no fold_K/run/best.safetensors", file=sys.stderr)
        return 2
    named = index_dataset(args.data).by_name()
    folds = {}
    for run in runs:
        folds[run.parent.name] = fold_results(named, run, args.threads)
        print(f"{run.parent.name}: " + ", ".join(f"{m} {folds[run.parent.name][m]['rule']}" for m in MODES))
    pooled = {m: {n: r for f in folds.values() for n, r in f[m]["test"].items()} for m in MODES}
    report: dict[str, Any] = {
        "cv": str(args.cv),
        "folds": folds,
        "summary": {m: summary(pooled[m]) for m in MODES},
    }
    paired = paired_summary([pooled["flip"][n]["dice"] - pooled["none"][n]["dice"] for n in pooled["none"]])
    report["paired_flip_minus_none"] = paired.to_dict()
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    for mode in MODES:
        print(f"TTA {mode}: {headline(report['summary'][mode])}")
    print(f"flip - none: {paired.mean:+.3f} (95% CI {paired.low:+.3f} to {paired.high:+.3f}), {paired.n_better} better")
    return 0


if __name__ == "__main__":
    run_script(main)
