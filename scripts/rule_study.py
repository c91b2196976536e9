"""How much does one post-processing setting change, on the validation patients that choose the rule?

For every fold of a CV folder, the fold model predicts its 10 validation patients. The fold's own
rule is then applied with one field of ``lggseg.model.bundle.PostProcess`` set to each value of
``--values`` (the rest of the rule unchanged). Printed and written: mean per-patient Dice and
false-positive slices over all validation patients for each value, and how many patients each
value moves by more than 0.002 Dice against the first value. Test patients are not read: this is
the evidence the rule list (``lggseg.train.calibrate.RULES``) was built on.

Usage (about 2 minutes for 50 validation patients on 2 idle CPU cores)::

    python scripts/rule_study.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --field min_end_core \\
        --values 0 100 150 400 --out end_core.json
    python scripts/rule_study.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --field fill_holes \\
        --values false true --out fill_holes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.errors import run_script
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.model.bundle import PostProcess, load_weights

MOVED = 0.002
"""A patient whose Dice changes by more than this against the first value counts as moved."""


def parse_value(field: str, text: str) -> bool | int | float:
    """The value of ``--values`` for ``field``, typed like the field's default."""
    default = getattr(PostProcess(), field)
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{field} takes true or false, got {text!r}")
        return text.lower() == "true"
    return type(default)(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder: fold_K/run/{best.safetensors,split.json}")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    fields = [f.name for f in dataclasses.fields(PostProcess)]
    parser.add_argument("--field", choices=fields, default="min_end_core", help="the PostProcess field to vary")
    parser.add_argument("--values", nargs="+", default=["0", "100", "150", "400"], help="values to try, first = base")
    args = parser.parse_args(argv)
    try:
        values = [parse_value(args.field, text) for text in args.values]
    except ValueError as exc:
        print(f"error: --values: {exc}", file=sys.stderr)
        return 2
    weights = cv_fold_weights(args.cv)
    if not weights:
        print(f"error: {args.cv}: no fold_K/run/best.safetensors", file=sys.stderr)
        return 2
    named = index_dataset(args.data).by_name()
    dices: list[list[float]] = [[] for _ in values]
    false_positives = [0 for _ in values]
    empty = 0
    for path in weights:
        bundle = load_weights(path)
        segmenter = Segmenter(bundle, config=InferenceConfig())
        for name in json.loads((path.parent / "split.json").read_text())["validation"]:
            volume = load_volume(named[name])
            truth = volume.require_masks()
            prob = segmenter.probabilities(volume.images)
            empty += int((~truth.any(axis=(1, 2))).sum())
            for i, value in enumerate(values):
                mask = postprocess.apply(prob, dataclasses.replace(bundle.post, **{args.field: value}))
                dices[i].append(metrics.dice(mask, truth))
                false_positives[i] += metrics.false_positive_slices(mask, truth)[0]
    rows = []
    for i, value in enumerate(values):
        moves = [d - base for d, base in zip(dices[i], dices[0]) if abs(d - base) > MOVED]
        rows.append(
            {
                args.field: value,
                "mean_dice": statistics.fmean(dices[i]),
                "false_positive_slices": false_positives[i],
                "patients_better": sum(m > 0 for m in moves),
                "patients_worse": sum(m < 0 for m in moves),
            }
        )
    report = {"cv": str(args.cv), "field": args.field, "n_validation_patients": len(dices[0]), "empty_slices": empty}
    atomic.write_text(args.out, json.dumps({**report, "moved": MOVED, "rows": rows}, indent=1) + "\n")
    for row in rows:
        print(
            f"{args.field} = {row[args.field]}: mean Dice {row['mean_dice']:.4f}, {row['false_positive_slices']} "
            f"false-positive slices of {empty}; against the first value {row['patients_better']} patients better, "
            f"{row['patients_worse']} worse (by more than {MOVED})"
        )
    return 0


if __name__ == "__main__":
    run_script(main)
