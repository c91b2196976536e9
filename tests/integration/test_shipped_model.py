"""The shipped model is recipe v3's final model (docs/final/): what it was trained on, and that it
reproduces its recorded numbers on the two bundled demo patients it held out. The fold-0 model of
the cross-validation (docs/cv/fold_0/) reproduces its report, 3 channels and FLAIR alone (needs the
full data set)."""

import json
import statistics
from pathlib import Path

import pytest

from lggseg.data.dataset import flair_only_images, index_dataset, load_volume
from lggseg.data.splits import fold_of
from lggseg.evaluation import metrics
from lggseg.evaluation.evaluate import evaluate
from lggseg.infer.provenance import seen_in_training
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import load_weights

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
FINAL = DOCS / "final"
FOLD0 = DOCS / "cv" / "fold_0"


def test_final_record_belongs_to_the_shipped_weights():
    record = json.loads((FINAL / "test" / "metrics.json").read_text())
    split = json.loads((FINAL / "run" / "split.json").read_text())
    info = load_weights(None).info
    assert record["weights_sha256"] == load_weights(None).sha256
    assert info["fold"] == -1 and sorted(info["trained_on"]) == sorted(split["train"] + split["validation"])
    assert len(split["train"]) == 88 and len(split["validation"]) == 10
    assert sorted(split["test"]) == ["TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"]  # the demo patients
    assert not any(seen_in_training(info, name) for name in split["test"])


def test_shipped_model_reproduces_its_record_on_the_held_out_demo_patients(sample_dir, tmp_path):
    record = json.loads((FINAL / "test" / "metrics.json").read_text())
    report = evaluate(sample_dir, tmp_path, weights=None, log=lambda message: None)
    assert report["n_patients"] == record["n_patients"] == 2
    assert report["mean_dice"] == pytest.approx(record["mean_dice"], abs=2e-3)
    assert report["min_dice"] >= 0.88  # both demo patients are segmented well by a model that never saw them
    assert report["test_result_note"] == "test result: the model never saw any of these 2 patients"
    # every false positive of the shipped model here is the outline drawn wide: no blob apart, no extra slice
    for budget in report["error_budget"]["per_patient"].values():
        assert budget["fp"] > 0 and budget["fp_outline"] == budget["fp"]


@pytest.mark.full_data
def test_shipped_model_trained_on_every_patient_but_the_demo_ones(full_data):
    present = {p.name for p in index_dataset(full_data).patients}
    trained_on = set(load_weights(None).info["trained_on"])
    assert trained_on == present - {"TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"}


@pytest.mark.full_data
def test_evaluate_fold0_reproduces_the_cv_report(full_data, tmp_path):
    card = json.loads((FOLD0 / "test" / "metrics.json").read_text())
    weights = FOLD0 / "run" / "best.safetensors"
    assert card["weights_sha256"] == load_weights(weights).sha256
    report = evaluate(full_data, tmp_path, weights=weights, fold=0, log=lambda message: None)
    assert report["n_patients"] == card["n_patients"] == 21
    for key in ("mean_dice", "median_dice", "min_dice"):
        assert report[key] == pytest.approx(card[key], abs=2e-3), key


@pytest.mark.full_data
def test_flair_alone_stays_within_0_02_of_three_channels_on_fold0(full_data):
    """Issue 13: FLAIR alone (repeated, as predict feeds it) against the 3 channels, per-patient 3D
    Dice of the fold-0 model on its 21 test patients; MODEL_CARD's "Input kinds" rows."""
    card = json.loads((FOLD0 / "flair_only.json").read_text())
    weights = FOLD0 / "run" / "best.safetensors"
    assert card["weights_sha256"] == load_weights(weights).sha256
    segmenter = Segmenter.from_weights(weights)
    patients = [p for p in index_dataset(full_data).patients if fold_of(p.name) == 0 and p.has_masks]
    three, flair = [], []
    for patient in patients:
        volume = load_volume(patient)
        truth = volume.require_masks()
        for images, scores in ((volume.images, three), (flair_only_images(volume.images[..., 1]), flair)):
            scores.append(metrics.dice(segmenter.segment(images), truth))
    assert len(three) == card["patients"] == 21
    assert statistics.fmean(three) == pytest.approx(card["summary"]["3ch"]["mean"], abs=2e-3)
    assert statistics.fmean(flair) == pytest.approx(card["summary"]["flair_repeat"]["mean"], abs=2e-3)
    assert statistics.fmean(three) - statistics.fmean(flair) <= 0.02
