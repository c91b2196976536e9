"""Evaluation by the protocol of docs/protocol.md: per-patient 3D Dice on the original grid, after
the predict path's own post-processing, summarised over patients.

Writes ``metrics.json`` (headline numbers, ``tumor_sizes`` (the same numbers by annotated tumor
size), ``error_budget`` (each patient's wrong voxels by cause, :mod:`lggseg.evaluation.error_budget`)
+ ``per_patient``), ``per_patient.csv``,
``dice_per_patient.png`` and ``overlays.png`` (best, median and worst slices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from lggseg.data.dataset import PatientFiles, index_dataset, load_volume
from lggseg.data.splits import split_for_fold
from lggseg.errors import LggsegError
from lggseg.evaluation import cohort, error_budget, metrics
from lggseg.evaluation.report import PROTOCOL, pick_slices, write_report
from lggseg.infer.provenance import seen_in_training
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io.progress import track


def select_patients(data: str | Path, fold: int | None) -> tuple[list[PatientFiles], dict[str, Any]]:
    """The patients to evaluate: fold ``fold``'s test patients, or every patient folder."""
    index = index_dataset(data)
    named = index.by_name()
    if fold is None:
        return index.patients, {"selection": "all patient folders", "skipped": 0}
    split = split_for_fold(sorted(named), fold, n_validation=0)
    if not split.test:
        raise LggsegError(f"{index.root}: no patient of fold {fold} is present")
    return [named[n] for n in split.test], {
        "selection": f"test patients of canonical fold {fold}",
        "skipped": split.skipped,
    }


def evaluate(
    data: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    fold: int | None = None,
    inference: InferenceConfig | None = None,
    segmenter: Segmenter | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate a model on patient folders and write the report to ``out``. Returns the report."""
    patients, selection = select_patients(data, fold)
    missing = [p.folder for p in patients if not p.has_masks]
    if missing:
        raise LggsegError(f"{missing[0]}: evaluation needs a mask for every slice")
    segmenter = segmenter or Segmenter.from_weights(weights, inference)
    threshold = segmenter.bundle.post.threshold
    per_patient: list[dict[str, Any]] = []
    budgets: dict[str, dict[str, int]] = {}
    slice_cases: list[tuple[float, str, int, np.ndarray, np.ndarray, np.ndarray]] = []
    for patient in track(patients, description="evaluating"):
        volume = load_volume(patient)
        truth = volume.require_masks()
        prob, pred = segmenter.segment_with_probabilities(volume.images)
        per_patient.append({"patient": patient.name, **metrics.patient_metrics(pred, truth)})
        budgets[patient.name] = error_budget.error_budget(prob, pred, truth, threshold)
        for z in np.flatnonzero(truth.reshape(len(pred), -1).any(1)):
            slice_cases.append(
                (
                    metrics.dice(pred[z], truth[z]),
                    patient.name,
                    int(volume.numbers[z]),
                    volume.images[z],
                    truth[z],
                    pred[z],
                )
            )
    summary = metrics.summarize(per_patient)
    bundle = segmenter.bundle
    answers = {row["patient"]: seen_in_training(bundle.info, row["patient"]) for row in per_patient}
    seen = [name for name, answer in answers.items() if answer is True]
    unknown = [name for name, answer in answers.items() if answer is None]
    note = evaluation_note(len(answers), len(seen), len(unknown))
    report = {
        **summary,
        "protocol": PROTOCOL,
        **selection,
        "test_result_note": note,
        "patients_seen_in_training": seen,
        "patients_provenance_unknown": unknown,
        "fold": fold,
        "weights": str(bundle.path) if bundle.path else None,
        "weights_sha256": bundle.sha256,
        "tta": bundle.tta,
        "postprocess": bundle.post.to_dict(),
        "tumor_sizes": cohort.size_rows(per_patient),
        "error_budget": {**error_budget.summarize(list(budgets.values())), "per_patient": budgets},
        "per_patient": per_patient,
    }
    out = Path(out)
    write_report(report, out, pick_slices(slice_cases))
    log(
        f"{summary['n_patients']} patients: mean Dice {summary['mean_dice']:.4f}, median {summary['median_dice']:.4f}, "
        f"min {summary['min_dice']:.4f}; report in {out / 'metrics.json'}"
    )
    log(note)
    return report


def evaluation_note(n_patients: int, n_seen: int, n_unknown: int) -> str:
    """Whether a summary over ``n_patients`` is a test result, given how many the model saw or may have seen."""
    if n_seen:
        return (
            f"NOT a test result: the model trained on {n_seen} of these {n_patients} patients "
            "(their Dice is optimistic); evaluate a model on patients it never saw "
            "(e.g. --fold K with that fold's model)"
        )
    if n_unknown:
        return (
            f"unknown whether the model saw {n_unknown} of these {n_patients} patients: not known to be a test result"
        )
    return f"test result: the model never saw any of these {n_patients} patients"
