"""``lggseg demo``: the shipped model on the bundled sample patients (held out by the shipped final model;
test patients of canonical fold 0).

Every Dice it prints says whether the model saw that patient in training
(:mod:`lggseg.infer.provenance`): a Dice of a training patient is no test result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from lggseg.data.bundled import sample_root
from lggseg.data.dataset import index_dataset
from lggseg.errors import LggsegError
from lggseg.evaluation import figures, metrics
from lggseg.infer.provenance import provenance_note, seen_in_training
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LggsegError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
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
            "seen_in_training": seen_in_training(segmenter.bundle.info, patient.name),
            "provenance": provenance_note(segmenter.bundle.info, patient.name),
        }
        results.append(row)
        log(
            f"{patient.name}: Dice {case.dice:.3f} ({row['provenance']}), tumor volume {case.volume} voxels "
            f"(truth {row['volume_true']})"
        )
        log(f"  summary figure  {summary_png}")
        log(f"  overlays        {out / patient.name / 'overlays'}")
        log(f"  NIfTI mask      {row['nifti_mask']}")
    report = {"weights_sha256": segmenter.bundle.sha256, "patients": results, "seconds": time.perf_counter() - began}
    atomic.write_text(out / "demo.json", json.dumps(report, indent=1))
    log(f"done in {report['seconds']:.1f} s; results in {out / 'demo.json'}")
    return report
