"""Where the false-positive slices are: a breakdown of predicted tumor on tumor-free slices.

The protocol's false-positive rate counts every tumor-free slice (no ground-truth voxel) on which
the prediction has any voxel. This script splits those slices by how far they lie from the nearest
ground-truth tumor slice (adjacent ones are mostly the tumor's own extent, drawn one slice longer or
shorter than the annotator drew it) and by where they sit in the volume (the top fifth of the
slices, near the vertex, is where bright cortex and skull rim are taken for tumor).

    lggseg shape --data DATA --masks predicted --cv CV --out RG --save-masks   # out-of-fold masks
    python scripts/fp_breakdown.py --data DATA --masks RG/masks --out fp_breakdown.json
    python scripts/fp_breakdown.py --data DATA --fold K --weights W --out fp.json   # one model, its test fold

Prints a table and writes the per-slice rows and the totals as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.data.splits import fold_of
from lggseg.errors import LggsegError, run_script
from lggseg.infer.segmenter import Segmenter
from lggseg.shape.sources import folder_source, truth_source

TOP_FRACTION = 0.2
"""A slice in the top fifth of its volume counts as a vertex slice."""


def slice_rows(patient: str, pred: np.ndarray, truth: np.ndarray) -> list[dict[str, object]]:
    """One row per false-positive slice of a ``(Z, H, W)`` prediction against its truth."""
    has_tumor = truth.reshape(len(truth), -1).any(1)
    tumor = np.flatnonzero(has_tumor)
    predicted = pred.reshape(len(pred), -1).any(1)
    rows = []
    for z in np.flatnonzero(predicted & ~has_tumor):
        distance = int(np.abs(tumor - z).min()) if tumor.size else -1
        rows.append(
            {
                "patient": patient,
                "slice": int(z),
                "n_slices": len(pred),
                "distance": distance,
                "vertex": bool(z >= (1 - TOP_FRACTION) * len(pred)),
                "area_px": int(pred[z].sum()),
            }
        )
    return rows


def kind(row: dict[str, object]) -> str:
    distance = int(row["distance"])  # type: ignore[call-overload]
    if distance == -1:
        return "patient without tumor"
    if distance == 1:
        return "adjacent to a tumor slice"
    if distance <= 3:
        return "2-3 slices from the tumor"
    return "vertex, > 3 slices away" if row["vertex"] else "elsewhere, > 3 slices away"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="kaggle_3m-style folder with the manual masks")
    parser.add_argument("--masks", type=Path, default=None, help="predicted masks (lggseg shape --save-masks)")
    parser.add_argument("--fold", type=int, default=None, help="instead of --masks: predict this fold's test patients")
    parser.add_argument("--weights", type=Path, default=None, help="with --fold: the model (default: the shipped one)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    if (args.masks is None) == (args.fold is None):
        parser.error("give --masks or --fold")
    index = index_dataset(args.data)
    truth = truth_source(index)
    if truth is None:
        raise LggsegError(f"{args.data} has no ground-truth masks")
    if args.masks is not None:
        predicted = folder_source(args.masks)
    else:
        segmenter = Segmenter.from_weights(args.weights)
        volumes = {p.name: p for p in index.patients if fold_of(p.name) == args.fold}

        def predicted(name: str) -> np.ndarray | None:
            if name not in volumes:
                return None
            images = load_volume(volumes[name], with_masks=False).images
            return segmenter.segment(images)

    rows: list[dict[str, object]] = []
    empty = 0
    for patient in index.patients:
        pred, true = predicted(patient.name), truth(patient.name)
        if pred is None or true is None:
            continue
        empty += int((~true.reshape(len(true), -1).any(1)).sum())
        rows += slice_rows(patient.name, pred.astype(bool), true.astype(bool))
    counts = Counter(kind(r) for r in rows)
    by_patient = Counter(str(r["patient"]) for r in rows)
    print(f"{len(rows)} false-positive slices of {empty} tumor-free slices ({len(rows) / max(empty, 1):.2%})")
    print("| where | slices | share of tumor-free slices |\n|---|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {n} | {n / max(empty, 1):.2%} |")
    print("patients with the most:", ", ".join(f"{p} ({n})" for p, n in by_patient.most_common(5)))
    report = {
        "n_empty_slices": empty,
        "n_false_positive_slices": len(rows),
        "by_kind": dict(counts),
        "by_patient": dict(by_patient),
        "slices": rows,
    }
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
