"""How far can component post-processing go? An oracle ceiling over a cross-validation.

For every fold of a CV folder, the fold model predicts its test patients, and its own rule (the one
its validation patients chose, stored in its weights) makes the mask. The oracle then removes every
3D component of that mask that does not touch the ground truth: no rule that judges components can
do better than that. The gap between the two says what post-processing could still win; the rest
must come from the network. The oracle looks at the truth, so its numbers are a bound, never an
estimate, and nothing is chosen with them.

Usage (about 3 minutes for 100 patients on 2 idle CPU cores)::

    python scripts/component_ceiling.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --out ceiling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.errors import run_script
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.model.bundle import load_weights

CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # the components post-processing judges


def oracle(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(Z, H, W)`` bool -> the mask without its 3D components that touch no truth voxel."""
    labels, n = ndimage.label(mask, structure=CONNECTIVITY)
    touching = np.zeros(n + 1, bool)
    touching[np.unique(labels[truth & mask])] = True
    touching[0] = False
    return touching[labels]


def summary(rows: list[dict[str, Any]], key: str, fp_key: str) -> dict[str, float]:
    dices = [row[key] for row in rows]
    empty = sum(row["empty_slices"] for row in rows)
    return {
        "mean_dice": statistics.fmean(dices),
        "median_dice": statistics.median(dices),
        "min_dice": min(dices),
        "false_positive_rate_empty_slices": sum(row[fp_key] for row in rows) / empty if empty else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder: fold_K/run/{best.safetensors,split.json}")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    runs = [weights.parent for weights in cv_fold_weights(args.cv)]
    if not runs:
        print(f"error: {args.cv}: no fold_K/run/best.safetensors", file=sys.stderr)
        return 2
    named = index_dataset(args.data).by_name()
    rows: list[dict[str, Any]] = []
    for run in runs:
        bundle = load_weights(run / "best.safetensors")
        segmenter = Segmenter(bundle, config=InferenceConfig())
        for name in json.loads((run / "split.json").read_text())["test"]:
            volume = load_volume(named[name])
            truth = volume.require_masks()
            mask = postprocess.apply(segmenter.probabilities(volume.images), bundle.post)
            best = oracle(mask, truth)
            fp, empty = metrics.false_positive_slices(mask, truth)
            rows.append(
                {
                    "patient": name,
                    "fold": run.parent.name,
                    "dice": metrics.dice(mask, truth),
                    "dice_oracle": metrics.dice(best, truth),
                    "fp_slices": fp,
                    "fp_slices_oracle": metrics.false_positive_slices(best, truth)[0],
                    "empty_slices": empty,
                }
            )
    report = {
        "cv": str(args.cv),
        "n_patients": len(rows),
        "rule_of_each_fold": summary(rows, "dice", "fp_slices"),
        "oracle_component_removal": summary(rows, "dice_oracle", "fp_slices_oracle"),
        "per_patient": rows,
    }
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    for key in ("rule_of_each_fold", "oracle_component_removal"):
        s = report[key]
        print(
            f"{key}: {len(rows)} patients, mean {s['mean_dice']:.3f} median {s['median_dice']:.3f} "
            f"min {s['min_dice']:.3f}, FP {s['false_positive_rate_empty_slices']:.1%}"
        )
    return 0


if __name__ == "__main__":
    run_script(main)
