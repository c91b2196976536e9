import math

import numpy as np
import pytest

from lggseg.evaluation import metrics


def _cube(shape=(10, 32, 32), box=((2, 6), (4, 12), (4, 12))):
    volume = np.zeros(shape, bool)
    volume[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]] = True
    return volume


def test_dice_iou_known_values():
    a = np.zeros((1, 4, 4), bool)
    b = np.zeros((1, 4, 4), bool)
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :] = True  # 8 voxels, 4 shared
    assert metrics.dice(a, b) == pytest.approx(8 / 12)
    assert metrics.iou(a, b) == pytest.approx(4 / 8)


def test_both_empty_is_perfect():
    empty = np.zeros((3, 8, 8), bool)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.hd95(empty, empty) == 0.0


def test_hd95_shifted_cube_and_undefined_case():
    a = _cube()
    b = np.roll(a, 3, axis=2)
    assert metrics.hd95(a, a) == 0.0
    assert metrics.hd95(a, b) == pytest.approx(3.0)
    assert metrics.hd95(a, np.zeros_like(a)) is None


def test_patient_metrics_counts_false_positive_slices():
    truth = _cube()
    pred = truth.copy()
    pred[8, 0, 0] = True  # a blob on a tumor-free slice
    row = metrics.patient_metrics(pred, truth)
    assert row["n_tumor_slices"] == 4 and row["n_empty_slices"] == 6
    assert row["n_false_positive_slices"] == 1
    assert row["volume_pred"] == row["volume_true"] + 1
    assert row["dice_tumor_slices"] == 1.0


def test_summarize_headline_is_per_patient_not_pooled():
    big = metrics.patient_metrics(_cube(box=((0, 10), (0, 30), (0, 30))), _cube(box=((0, 10), (0, 30), (0, 30))))
    small_truth = _cube(box=((0, 1), (0, 2), (0, 2)))
    small = metrics.patient_metrics(np.zeros_like(small_truth), small_truth)
    summary = metrics.summarize([big, small])
    assert summary["mean_dice"] == pytest.approx(0.5)
    assert summary["median_dice"] == pytest.approx(0.5)
    assert summary["min_dice"] == 0.0
    assert summary["extra_batch_pooled_dice"] > 0.99
    assert summary["n_hd95_undefined"] == 1
    assert not math.isnan(summary["mean_hd95"])
