import numpy as np
import pytest

from lggseg.model.bundle import PostProcess
from lggseg.train.calibrate import RULES, TIE, score, select_rule


def test_select_rule_picks_the_best_rule():
    scores = [(RULES[0], 0.80), (RULES[1], 0.83), (RULES[2], 0.86), (RULES[3], 0.84)]
    assert select_rule(scores) == (RULES[2], 0.86)


def test_a_tie_goes_to_the_rule_listed_first():
    within = TIE / 2
    scores = [(RULES[0], 0.80), (RULES[1], 0.85 - within), (RULES[2], 0.85)]
    assert select_rule(scores) == (RULES[1], 0.85 - within)
    beyond = [(RULES[0], 0.80), (RULES[1], 0.85 - 2 * TIE), (RULES[2], 0.85)]
    assert select_rule(beyond)[0] == RULES[2]


def test_select_rule_needs_rules():
    with pytest.raises(ValueError):
        select_rule([])


def test_rules_start_with_the_plain_threshold_and_never_keep_the_largest():
    assert RULES[0] == PostProcess(0.5)
    assert not any(rule.keep_largest for rule in RULES)


def test_score_is_the_mean_per_patient_dice_after_the_rule():
    truth = np.zeros((4, 16, 16), bool)
    truth[1:3, 4:10, 4:10] = True
    prob = np.where(truth, 0.95, 0.0).astype(np.float32)
    prob[0, 0, 0] = 0.6  # a one-voxel false positive
    noisy = score([prob], [truth], PostProcess(0.5))
    cleaned = score([prob], [truth], PostProcess(0.5, min_component=2))
    assert cleaned == 1.0 and noisy < 1.0
    assert score([prob, prob], [truth, truth], PostProcess(0.5)) == pytest.approx(noisy)
