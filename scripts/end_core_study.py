"""How much does the end-core trim change, on the validation patients that choose post-processing?

For every fold of a CV folder, the fold model predicts its 10 validation patients; the fold's own
rule without its end-core trim (``min_end_core = 0``) is the baseline, and the trim is then added at
each pixel count of ``--cores`` (``lggseg.infer.postprocess.trim_unsure_ends``). Printed and
written: mean per-patient Dice and false-positive slices over all validation patients for each
count. Test patients are not read: this is the evidence the rule list was built on.

Usage (about 2 minutes for 50 validation patients on 2 idle CPU cores)::

    python scripts/end_core_study.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --out end_core.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.model.bundle import load_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder: fold_K/run/{best.safetensors,split.json}")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--cores", type=int, nargs="+", default=[0, 100, 150, 400], help="pixel counts to try")
    args = parser.parse_args(argv)
    weights = cv_fold_weights(args.cv)
    if not weights:
        print(f"error: {args.cv}: no fold_K/run/best.safetensors", file=sys.stderr)
        return 2
    named = index_dataset(args.data).by_name()
    dices: dict[int, list[float]] = {n: [] for n in args.cores}
    false_positives = dict.fromkeys(args.cores, 0)
    empty = 0
    for path in weights:
        bundle = load_weights(path)
        segmenter = Segmenter(bundle, config=InferenceConfig())
        for name in json.loads((path.parent / "split.json").read_text())["validation"]:
            volume = load_volume(named[name])
            truth = volume.require_masks()
            prob = segmenter.probabilities(volume.images)
            empty += int((~truth.any(axis=(1, 2))).sum())
            for n in args.cores:
                mask = postprocess.apply(prob, dataclasses.replace(bundle.post, min_end_core=n))
                dices[n].append(metrics.dice(mask, truth))
                false_positives[n] += metrics.false_positive_slices(mask, truth)[0]
    rows = [
        {"min_end_core": n, "mean_dice": statistics.fmean(dices[n]), "false_positive_slices": false_positives[n]}
        for n in args.cores
    ]
    report = {"cv": str(args.cv), "n_validation_patients": len(dices[args.cores[0]]), "empty_slices": empty}
    atomic.write_text(args.out, json.dumps({**report, "rows": rows}, indent=1) + "\n")
    for row in rows:
        print(
            f"end core {row['min_end_core']:>4} px: mean Dice {row['mean_dice']:.4f}, "
            f"{row['false_positive_slices']} false-positive slices of {empty}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
