"""``evaluate`` says whether its summary is a test result: which evaluated patients the model saw."""

from pathlib import Path

import pytest
import torch

from lggseg.evaluation import cohort, error_budget
from lggseg.evaluation.evaluate import evaluate, evaluation_note
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet, UNetConfig

SAMPLE = ["TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"]


def _tiny_weights(path: Path, info: dict) -> Path:
    torch.manual_seed(0)
    save_weights(path, UNet(UNetConfig(base_width=2, depth=1)), info=info)
    return path


def test_note_names_the_seen_patients_count():
    assert evaluation_note(2, 0, 0) == "test result: the model never saw any of these 2 patients"
    assert evaluation_note(3, 1, 0).startswith("NOT a test result: the model trained on 1 of these 3 patients")
    assert evaluation_note(3, 0, 2).startswith("unknown whether the model saw 2 of these 3 patients")
    assert evaluation_note(3, 1, 2).startswith("NOT a test result")  # one seen patient is enough


@pytest.mark.parametrize(
    ("info", "seen", "unknown", "note"),
    [
        ({"fold": -1, "trained_on": [SAMPLE[1], "TCGA_DU_5849_19950405"]}, [SAMPLE[1]], [], "NOT a test result"),
        ({"fold": -1, "trained_on": ["TCGA_DU_5849_19950405"]}, [], [], "test result"),
        ({}, [], SAMPLE, "unknown whether"),
    ],
)
def test_report_lists_the_patients_the_model_saw(sample_dir, tmp_path, info, seen, unknown, note):
    weights = _tiny_weights(tmp_path / "w.safetensors", info)
    lines: list[str] = []
    report = evaluate(sample_dir, tmp_path / "ev", weights=weights, log=lines.append)
    assert report["patients_seen_in_training"] == seen
    assert report["patients_provenance_unknown"] == unknown
    assert report["test_result_note"].startswith(note) and lines[-1] == report["test_result_note"]
    # the same numbers by annotated tumor size: each patient counted once, in its size group
    groups = {g["tumor_voxels"]: g["n_patients"] for g in report["tumor_sizes"]}
    expected: dict[str, int] = {}
    for row in report["per_patient"]:
        label = cohort.size_group(row["volume_true"])
        expected[label] = expected.get(label, 0) + 1
    assert groups == expected and sum(groups.values()) == 2
    # each patient's error budget accounts for its wrong voxels and gives back its Dice
    budgets = report["error_budget"]["per_patient"]
    assert sorted(budgets) == SAMPLE and report["error_budget"]["n_patients"] == 2
    for row in report["per_patient"]:
        budget = budgets[row["patient"]]
        assert budget["fp"] + budget["tp"] == row["volume_pred"] and budget["fn"] + budget["tp"] == row["volume_true"]
        assert sum(budget[c] for c in error_budget.FALSE_POSITIVE_CAUSES) == budget["fp"]
        assert sum(budget[c] for c in error_budget.FALSE_NEGATIVE_CAUSES) == budget["fn"]
        assert error_budget.dice_without(budget) == pytest.approx(row["dice"])
