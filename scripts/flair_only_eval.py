"""FLAIR-only against 3-channel input: per-patient 3D Dice of one model on one fold's test patients.

For every test patient of the fold (docs/protocol.md: the model grid, the weights' own threshold
and post-processing), the mask is predicted from

* ``3ch``: the three channels as stored (pre-contrast, FLAIR, post-contrast);
* ``flair_zeros``: FLAIR alone, pre- and post-contrast channels zero (``flair_only_images(fill="zeros")``);
* ``flair_repeat``: FLAIR alone, repeated in the three channels (``fill="repeat"``).

Usage (about 3 minutes for the 21 fold-0 patients on 2 CPU cores)::

    python scripts/flair_only_eval.py --data ../shared/data/lgg/kaggle_3m --fold 0 --out flair_only.json

The JSON holds the per-patient table, mean/median/min per input kind and the weights' SHA-256.
Over a cross-validation (each fold evaluated with its own weights into ``CV/fold_K/flair_only.json``),
``--merge CV`` pools the folds' patients into ``CV/flair_only.json``: every patient scored by the one
model that never saw it, with the gap between the 3-channel and the FLAIR-only (default fill) mean::

    python scripts/flair_only_eval.py --data DATA --fold K --weights CV/fold_K/run/best.safetensors \
        --out CV/fold_K/flair_only.json                                    # per fold
    python scripts/flair_only_eval.py --merge CV                           # all folds present
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from lggseg.data.dataset import flair_only_images, index_dataset, load_volume
from lggseg.data.splits import fold_of
from lggseg.errors import LggsegError, run_script
from lggseg.evaluation import metrics
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic

MODES = ("3ch", "flair_zeros", "flair_repeat")


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
    }


def merge(cv_dir: Path) -> dict[str, object]:
    """Pool ``cv_dir/fold_*/flair_only.json`` into one out-of-fold report (written to ``cv_dir/flair_only.json``)."""
    folds = sorted(cv_dir.glob("fold_*/flair_only.json"))
    if not folds:
        raise LggsegError(f"no fold_*/flair_only.json under {cv_dir}")
    reports = [json.loads(f.read_text()) for f in folds]
    rows = [row for r in reports for row in r["per_patient"]]
    summary = {mode: summarise([float(r[mode]) for r in rows]) for mode in MODES}
    merged: dict[str, object] = {
        "folds": [r["fold"] for r in reports],
        "patients": len(rows),
        "summary": summary,
        "gap_mean_3ch_minus_flair_repeat": round(summary["3ch"]["mean"] - summary["flair_repeat"]["mean"], 4),
        "per_fold": [{"fold": r["fold"], "patients": r["patients"], **r["summary"]} for r in reports],
        "per_patient": rows,
    }
    atomic.write_text(cv_dir / "flair_only.json", json.dumps(merged, indent=1))
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge", type=Path, default=None, help="pool CV/fold_*/flair_only.json and stop")
    parser.add_argument("--data", type=Path, default=None, help="kaggle_3m-style folder")
    parser.add_argument("--fold", type=int, default=0, help="canonical fold whose test patients are used")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--weights", type=Path, default=None, help="weights (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=0, help="first N test patients only (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = parser.parse_args(argv)
    if args.merge is not None:
        merged = merge(args.merge)
        for mode in MODES:
            s = merged["summary"][mode]  # type: ignore[index]
            print(f"{mode:13s} mean {s['mean']:.3f}  median {s['median']:.3f}  min {s['min']:.3f}")
        print(f"{merged['patients']} patients of folds {merged['folds']}; wrote {args.merge / 'flair_only.json'}")
        return 0
    if args.data is None or args.out is None:
        parser.error("--data and --out are required (or --merge CV)")

    began = time.perf_counter()
    segmenter = Segmenter.from_weights(args.weights, InferenceConfig(threads=args.threads))
    patients = [p for p in index_dataset(args.data).patients if fold_of(p.name) == args.fold and p.has_masks]
    if args.limit:
        patients = patients[: args.limit]
    if not patients:
        print(f"no test patients of fold {args.fold} with masks under {args.data}", file=sys.stderr)
        return 2
    rows = []
    for patient in patients:
        volume = load_volume(patient)
        truth = volume.require_masks()
        inputs = {
            "3ch": volume.images,
            "flair_zeros": flair_only_images(volume.images[..., 1], fill="zeros"),
            "flair_repeat": flair_only_images(volume.images[..., 1], fill="repeat"),
        }
        row: dict[str, object] = {
            "patient": patient.name,
            "slices": len(volume.images),
            "true_voxels": int(truth.sum()),
        }
        for mode in MODES:
            mask = segmenter.segment(inputs[mode])
            row[mode] = round(metrics.dice(mask, truth), 4)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    report = {
        "fold": args.fold,
        "weights_sha256": segmenter.bundle.sha256,
        "post_processing": segmenter.bundle.post.to_dict(),
        "patients": len(rows),
        "summary": {mode: summarise([float(r[mode]) for r in rows]) for mode in MODES},  # type: ignore[arg-type]
        "per_patient": rows,
        "seconds": round(time.perf_counter() - began, 1),
        "command": "python scripts/flair_only_eval.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    atomic.write_text(args.out, json.dumps(report, indent=1))
    for mode in MODES:
        s = report["summary"][mode]  # type: ignore[index]
        print(f"{mode:13s} mean {s['mean']:.3f}  median {s['median']:.3f}  min {s['min']:.3f}")
    print(f"wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    run_script(main)
