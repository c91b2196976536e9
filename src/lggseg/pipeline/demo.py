"""``lggseg demo``: the shipped model on the bundled sample patients (fold-0 test patients)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from lggseg.data.bundled import sample_root
from lggseg.data.dataset import index_dataset
from lggseg.evaluation import figures, metrics
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.pipeline.predict import predict_patient

__all__ = ["run_demo", "sample_root"]


def run_demo(
    out: str | Path,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Segment each sample patient; write overlays, NIfTI, Dice and a one-page summary figure."""
    began = time.perf_counter()
    out = Path(out)
    segmenter = Segmenter.from_weights(weights, inference)
    results = []
    for patient in index_dataset(sample_root()).patients:
        case = predict_patient(segmenter, patient.folder, out)
        summary_png = out / patient.name / f"{patient.name}_summary.png"
        assert case.images is not None and case.truth is not None and case.dice is not None  # the sample has masks
        figures.patient_summary(patient.name, case.images, case.mask, case.truth, summary_png, case.dice)
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
