"""Evaluation metrics of the protocol of docs/protocol.md, as pure functions on boolean volumes.

All volumes are ``(Z, H, W)`` bool on the original 256x256 grid of one patient. HD95 uses unit
voxel spacing in 3D (MONAI's definition: the larger of the two directed 95th percentiles of
surface distances). Empty-vs-empty gives Dice = IoU = 1 and HD95 = 0; HD95 is undefined (None)
when exactly one of the two is empty.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P n G| / (|P| + |G|); 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P n G| / |P u G|; 1.0 when both are empty."""
    union = int(np.logical_or(pred, truth).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, truth).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0
    )


def hd95(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """95th-percentile symmetric Hausdorff distance in voxels (unit spacing)."""
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if has_pred != has_truth:
        return None
    union = pred | truth
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(union))
    pred, truth = pred[box], truth[box]
    sp, st = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~st)[sp]
    to_pred = ndimage.distance_transform_edt(~sp)[st]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def false_positive_slices(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """``(Z, H, W)`` pred, truth -> (tumor-free slices with any predicted voxel, tumor-free slices)."""
    empty = ~truth.reshape(truth.shape[0], -1).any(1)
    predicted = pred.reshape(pred.shape[0], -1).any(1)
    return int((predicted & empty).sum()), int(empty.sum())


def patient_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Every per-patient number of the protocol for one ``(Z, H, W)`` prediction."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    tumor_slices = truth.reshape(truth.shape[0], -1).any(1)
    false_positives, empty = false_positive_slices(pred, truth)
    volume_true, volume_pred = int(truth.sum()), int(pred.sum())
    return {
        "dice": dice(pred, truth),
        "iou": iou(pred, truth),
        "hd95": hd95(pred, truth),
        "volume_true": volume_true,
        "volume_pred": volume_pred,
        "abs_volume_error": abs(volume_pred - volume_true),
        "dice_tumor_slices": dice(pred[tumor_slices], truth[tumor_slices]) if tumor_slices.any() else None,
        "n_slices": int(truth.shape[0]),
        "n_tumor_slices": int(tumor_slices.sum()),
        "n_empty_slices": empty,
        "n_false_positive_slices": false_positives,
        "intersection": int(np.logical_and(pred, truth).sum()),
    }


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summarize(per_patient: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-patient metrics into the ``metrics.json`` headline numbers."""
    if not per_patient:
        raise ValueError("no patients to summarize")
    dices = [p["dice"] for p in per_patient]
    ious = [p["iou"] for p in per_patient]
    hds = _finite([p["hd95"] for p in per_patient])
    tumor_dice = _finite([p["dice_tumor_slices"] for p in per_patient])
    empty = sum(p["n_empty_slices"] for p in per_patient)
    false_pos = sum(p["n_false_positive_slices"] for p in per_patient)
    pooled_total = sum(p["volume_true"] + p["volume_pred"] for p in per_patient)
    return {
        "n_patients": len(per_patient),
        "mean_dice": statistics.fmean(dices),
        "median_dice": statistics.median(dices),
        "min_dice": min(dices),
        "std_dice": statistics.pstdev(dices),
        "mean_iou": statistics.fmean(ious),
        "median_iou": statistics.median(ious),
        "mean_hd95": statistics.fmean(hds) if hds else None,
        "median_hd95": statistics.median(hds) if hds else None,
        "n_hd95_undefined": sum(p["hd95"] is None for p in per_patient),
        "mean_abs_volume_error": statistics.fmean(p["abs_volume_error"] for p in per_patient),
        "mean_dice_tumor_slices": statistics.fmean(tumor_dice) if tumor_dice else None,
        "false_positive_rate_empty_slices": false_pos / empty if empty else None,
        "n_empty_slices": empty,
        "extra_batch_pooled_dice": (2.0 * sum(p["intersection"] for p in per_patient) / pooled_total)
        if pooled_total
        else 1.0,
        "extra_batch_pooled_dice_note": (
            "voxels pooled over all patients; NOT the headline (that is mean per-patient 3D Dice)"
        ),
    }
