import numpy as np
import pytest

from lggseg.evaluation import error_budget as eb
from lggseg.evaluation import metrics


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (8, 32, 32) patient with a known number of voxels for every cause (threshold 0.5).

    Tumor: slices 2-4, rows 10-19, cols 10-19 (300 voxels), and 50 voxels on slice 5. The mask
    covers slices 2-3 of it, spills 2 columns wide on slice 2 (20 outline false positives) and
    onto tumor-free slice 1 (10 extra-slice false positives), and covers rows 10-13 of slice 4.
    Of slice 4's 60 missed voxels, 30 are at p 0.05 (unseen), 20 at 0.3 (below the threshold) and
    10 at 0.8 (removed by post-processing); slice 5 is missed whole. Two separate false-positive
    blobs: 12 voxels at peak 0.99, 8 at peak 0.7.
    """
    truth = np.zeros((8, 32, 32), bool)
    truth[2:5, 10:20, 10:20] = True
    truth[5, 10:15, 10:20] = True
    prob = np.zeros(truth.shape, np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[2:4, 10:20, 10:20] = True
    mask[4, 10:14, 10:20] = True
    mask[2, 10:20, 20:22] = True  # outline: 20 voxels
    mask[1, 10:12, 10:15] = True  # extra slice: 10 voxels
    prob[mask] = 0.9
    missed = prob[4, 14:20, 10:20]  # view: the 60 missed voxels of slice 4
    missed[:3] = 0.05
    missed[3:5] = 0.3
    missed[5] = 0.8
    prob[5, 10:15, 10:20] = 0.6  # the missed slice: its probabilities do not matter
    mask[6, 0:3, 0:4] = True  # separate and confident: 12 voxels
    prob[6, 0:3, 0:4] = 0.6
    prob[6, 0, 0] = 0.99
    mask[6, 28:30, 28:32] = True  # separate and unsure: 8 voxels
    prob[6, 28:30, 28:32] = 0.7
    return prob, mask, truth


def test_every_cause_gets_its_voxels():
    prob, mask, truth = _case()
    budget = eb.error_budget(prob, mask, truth, threshold=0.5)
    assert budget == {
        "tp": 240,
        "fp": 50,
        "fn": 110,
        "fp_separate_confident": 12,
        "fp_separate_unsure": 8,
        "fp_extra_slice": 10,
        "fp_outline": 20,
        "fn_missed_slice": 50,
        "fn_unseen": 30,
        "fn_below_threshold": 20,
        "fn_removed": 10,
    }


def test_dice_from_the_budget_is_the_dice_of_the_mask():
    prob, mask, truth = _case()
    budget = eb.error_budget(prob, mask, truth, threshold=0.5)
    assert eb.dice_without(budget) == pytest.approx(metrics.dice(mask, truth))


def test_removing_a_cause_is_the_dice_of_the_corrected_mask():
    prob, mask, truth = _case()
    budget = eb.error_budget(prob, mask, truth, threshold=0.5)
    corrected = mask.copy()
    corrected[6, 0:3, 0:4] = False  # the confident separate blob made right
    assert eb.dice_without(budget, "fp_separate_confident") == pytest.approx(metrics.dice(corrected, truth))
    corrected = mask.copy()
    corrected[4][truth[4] & (prob[4] < 0.1)] = True  # the unseen tumor voxels made right
    assert eb.dice_without(budget, "fn_unseen") == pytest.approx(metrics.dice(corrected, truth))


def test_thresholds_move_voxels_between_causes():
    prob, mask, truth = _case()
    budget = eb.error_budget(prob, mask, truth, threshold=0.5, confident=0.995, unseen=0.4)
    assert budget["fp_separate_confident"] == 0 and budget["fp_separate_unsure"] == 20
    assert budget["fn_unseen"] == 50 and budget["fn_below_threshold"] == 0
    assert budget["fn_missed_slice"] == 50  # whatever its probabilities


def test_empty_mask_and_truth():
    empty = np.zeros((3, 8, 8), bool)
    budget = eb.error_budget(np.zeros((3, 8, 8)), empty, empty, threshold=0.5)
    assert budget["tp"] == budget["fp"] == budget["fn"] == 0
    assert eb.dice_without(budget) == 1.0


def test_bad_input_is_refused():
    prob, mask, truth = _case()
    with pytest.raises(ValueError, match="shapes differ"):
        eb.error_budget(prob[:4], mask, truth, threshold=0.5)
    with pytest.raises(ValueError, match="unknown cause"):
        eb.dice_without(eb.error_budget(prob, mask, truth, threshold=0.5), "fp_everything")


def test_summary_gains_add_up_per_cause():
    prob, mask, truth = _case()
    perfect = eb.error_budget(truth.astype(np.float32), truth, truth, threshold=0.5)
    summary = eb.summarize([eb.error_budget(prob, mask, truth, threshold=0.5), perfect])
    assert summary["n_patients"] == 2
    assert summary["mean_dice"] == pytest.approx((metrics.dice(mask, truth) + 1.0) / 2)
    missed = summary["causes"]["fn_missed_slice"]
    assert missed["voxels"] == 50
    # 2 x 290 / (2 x 290 + 50 + 60) = 0.8406 against 480 / 640 = 0.75 for the first patient, 1.0 for the second
    assert missed["mean_dice_without"] == pytest.approx((580 / 690 + 1.0) / 2)
    assert missed["patients_losing_over_0.05"] == 1
    assert summary["causes"]["fn_removed"]["patients_losing_over_0.05"] == 0
    with pytest.raises(ValueError, match="no patients"):
        eb.summarize([])
