"""The shipped model reproduces MODEL_CARD.md's fold-0 numbers (needs the full data set)."""

import json
from pathlib import Path

import pytest

from lggseg.evaluation.evaluate import evaluate
from lggseg.model.bundle import load_weights

pytestmark = pytest.mark.slow

CARD_METRICS = Path(__file__).resolve().parents[2] / "docs" / "cv_v3" / "fold_0" / "test" / "metrics.json"


def test_card_metrics_belong_to_the_shipped_weights():
    card = json.loads(CARD_METRICS.read_text())
    assert card["weights_sha256"] == load_weights(None).sha256
    assert card["fold"] == 0 and card["n_patients"] == 21


@pytest.mark.slow
@pytest.mark.full_data
def test_evaluate_fold0_reproduces_model_card(full_data, tmp_path):
    card = json.loads(CARD_METRICS.read_text())
    report = evaluate(full_data, tmp_path, weights=None, fold=0, log=lambda message: None)
    assert report["n_patients"] == card["n_patients"]
    for key in ("mean_dice", "median_dice", "min_dice"):
        assert report[key] == pytest.approx(card[key], abs=2e-3), key
    assert report["mean_dice"] >= 0.86 and report["median_dice"] >= 0.89  # the must-targets
