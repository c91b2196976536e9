"""``lggseg demo``: the shipped model on the bundled sample patients (fold-0 test patients)."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from lggseg import atomic, metrics, plots
from lggseg.dataset import index_dataset
from lggseg.inference import Segmenter
from lggseg.predict import predict_patient


def sample_root() -> Path:
    """Folder of the bundled sample (kaggle_3m layout)."""
    return Path(str(resources.files("lggseg").joinpath("sample", "kaggle_3m")))


def run_demo(out: str | Path, weights: str | Path | None = None, runtime_name: str = "torch", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Segment each sample patient; write overlays, NIfTI, Dice and a one-page summary figure."""
    began = time.perf_counter()
    out = Path(out)
    segmenter = Segmenter.from_weights(weights, runtime_name)
    results = []
    for patient in index_dataset(sample_root()).patients:
        case = predict_patient(segmenter, patient.folder, out)
        summary_png = out / patient.name / f"{patient.name}_summary.png"
        plots.patient_summary(patient.name, case.images, case.mask, case.truth, summary_png, case.dice)
        row = {
            "patient": patient.name,
            "dice": case.dice,
            "iou": metrics.iou(case.mask, case.truth),
            "volume_pred": case.volume,
            "volume_true": int(case.truth.sum()),
            "folder": str(out / patient.name),
            "summary_figure": str(summary_png),
            "nifti_mask": str(out / patient.name / f"{patient.name}_mask.nii.gz"),
        }
        results.append(row)
        log(f"{patient.name}: Dice {case.dice:.3f}, tumor volume {case.volume} voxels (truth {row['volume_true']})")
        log(f"  summary figure  {summary_png}")
        log(f"  overlays        {out / patient.name / 'overlays'}")
        log(f"  NIfTI mask      {row['nifti_mask']}")
    report = {"weights_sha256": segmenter.bundle.sha256, "patients": results, "seconds": time.perf_counter() - began}
    atomic.write_text(out / "demo.json", json.dumps(report, indent=1))
    log(f"done in {report['seconds']:.1f} s; results in {out / 'demo.json'}")
    return report
