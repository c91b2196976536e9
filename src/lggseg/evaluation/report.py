"""Writing an evaluation report: ``metrics.json``, ``per_patient.csv`` and the two figures.

``evaluate`` and the cross-validation merge (:mod:`lggseg.train.cv`) write the same files with
the same contract (see docs/protocol.md).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lggseg.io import atomic

PROTOCOL = (
    "per-patient 3D Dice on the 256x256 grid after the predict path's thresholding and post-processing "
    "(docs/protocol.md)"
)
"""The ``protocol`` field of every ``metrics.json``."""

CSV_FIELDS = [
    "patient",
    "dice",
    "iou",
    "hd95",
    "volume_true",
    "volume_pred",
    "abs_volume_error",
    "dice_tumor_slices",
    "n_slices",
    "n_tumor_slices",
    "n_false_positive_slices",
]

OverlayCase = tuple[str, np.ndarray, np.ndarray, np.ndarray]
"""(title, image ``(H, W, 3)``, truth ``(H, W)``, prediction ``(H, W)``)."""


def write_report(report: dict[str, Any], out: Path, overlays: Sequence[OverlayCase]) -> None:
    """``metrics.json``, ``per_patient.csv``, ``dice_per_patient.png`` and (if any) ``overlays.png``."""
    from lggseg.evaluation import figures

    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "metrics.json", json.dumps(report, indent=1))
    write_per_patient_csv(report["per_patient"], out / "per_patient.csv")
    figures.dice_bars(report["per_patient"], out / "dice_per_patient.png")
    if overlays:
        figures.overlay_grid(overlays, out / "overlays.png")


def write_per_patient_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    write_csv(rows, path, CSV_FIELDS)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path, fields: Sequence[str]) -> None:
    """Rows as CSV with the given columns (floats to 6 significant digits, None empty), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic.write_text(path, buffer.getvalue())


def pick_slices(slice_cases: list[tuple[float, str, int, np.ndarray, np.ndarray, np.ndarray]]) -> list[OverlayCase]:
    """Two best, two median and two worst tumor slices, from ``(dice, patient, number, image, truth, pred)``."""
    if not slice_cases:
        return []
    ranked = sorted(slice_cases, key=lambda c: c[0])
    n = len(ranked)
    picks = [
        ranked[-1],
        ranked[max(n - 2, 0)],
        ranked[n // 2],
        ranked[n // 2 - 1] if n > 2 else ranked[0],
        ranked[min(1, n - 1)],
        ranked[0],
    ]
    labels = ["best", "best", "median", "median", "worst", "worst"]
    return [(f"{label}: {c[1]} slice {c[2]}  Dice {c[0]:.2f}", c[3], c[4], c[5]) for label, c in zip(labels, picks)]
