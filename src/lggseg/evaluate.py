"""Evaluation by DESIGN.md's protocol: per-patient 3D Dice on the original grid, after the
predict path's own post-processing, summarised over patients.

Writes ``metrics.json`` (headline numbers + ``per_patient``), ``per_patient.csv``,
``dice_per_patient.png`` and ``overlays.png`` (best, median and worst slices).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lggseg import atomic, metrics
from lggseg.dataset import index_dataset, load_volume
from lggseg.errors import LggsegError
from lggseg.inference import Segmenter
from lggseg.splits import split_for_fold

CSV_FIELDS = ["patient", "dice", "iou", "hd95", "volume_true", "volume_pred", "abs_volume_error", "dice_tumor_slices", "n_slices", "n_tumor_slices", "n_false_positive_slices"]


def select_patients(data: str | Path, fold: int | None) -> tuple[list, dict[str, Any]]:
    """The patients to evaluate: fold ``fold``'s test patients, or every patient folder."""
    index = index_dataset(data)
    named = index.by_name()
    if fold is None:
        return index.patients, {"selection": "all patient folders", "skipped": 0}
    split = split_for_fold(sorted(named), fold, n_validation=0)
    if not split.test:
        raise LggsegError(f"{index.root}: no patient of fold {fold} is present")
    return [named[n] for n in split.test], {"selection": f"test patients of canonical fold {fold}", "skipped": split.skipped}


def evaluate(
    data: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    fold: int | None = None,
    runtime_name: str = "torch",
    segmenter: Segmenter | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate a model on patient folders and write the report to ``out``. Returns metrics."""
    patients, selection = select_patients(data, fold)
    missing = [p.folder for p in patients if not p.has_masks]
    if missing:
        raise LggsegError(f"{missing[0]}: evaluation needs a mask for every slice")
    segmenter = segmenter or Segmenter.from_weights(weights, runtime_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_patient: list[dict[str, Any]] = []
    slice_cases: list[tuple[float, str, int, np.ndarray, np.ndarray, np.ndarray]] = []
    from lggseg.progress import track

    for patient in track(patients, description="evaluating"):
        volume = load_volume(patient)
        pred, _ = segmenter.segment(volume.images)
        row = {"patient": patient.name, **metrics.patient_metrics(pred, volume.masks)}
        per_patient.append(row)
        for z in np.flatnonzero(volume.masks.reshape(len(pred), -1).any(1)):
            slice_cases.append((metrics.dice(pred[z], volume.masks[z]), patient.name, int(volume.numbers[z]), volume.images[z], volume.masks[z], pred[z]))
    summary = metrics.summarize(per_patient)
    bundle = segmenter.bundle
    report = {
        **summary,
        "protocol": "per-patient 3D Dice on the 256x256 grid after the predict path's thresholding and post-processing (DESIGN.md)",
        **selection,
        "fold": fold,
        "weights": str(bundle.path) if bundle.path else None,
        "weights_sha256": bundle.sha256,
        "tta": bundle.tta,
        "postprocess": bundle.post.to_dict(),
        "per_patient": per_patient,
    }
    atomic.write_text(out / "metrics.json", json.dumps(report, indent=1))
    write_per_patient_csv(per_patient, out / "per_patient.csv")
    from lggseg import plots

    plots.dice_bars(per_patient, out / "dice_per_patient.png")
    if slice_cases:
        slice_cases.sort(key=lambda c: c[0])
        picks = [slice_cases[-1], slice_cases[-2] if len(slice_cases) > 1 else slice_cases[-1], slice_cases[len(slice_cases) // 2], slice_cases[len(slice_cases) // 2 - 1] if len(slice_cases) > 2 else slice_cases[0], slice_cases[1] if len(slice_cases) > 1 else slice_cases[0], slice_cases[0]]
        labels = ["best", "best", "median", "median", "worst", "worst"]
        plots.overlay_grid([(f"{lab}: {c[1]} slice {c[2]}  Dice {c[0]:.2f}", c[3], c[4], c[5]) for lab, c in zip(labels, picks)], out / "overlays.png")
    log(
        f"{summary['n_patients']} patients: mean Dice {summary['mean_dice']:.4f}, median {summary['median_dice']:.4f}, "
        f"min {summary['min_dice']:.4f}; report in {out / 'metrics.json'}"
    )
    return report


def write_per_patient_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic.write_text(path, buffer.getvalue())
