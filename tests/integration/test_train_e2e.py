"""End to end on real slices: one tiny epoch of training, then evaluate and predict via the CLI."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from lggseg.commands.cli import main
from lggseg.model.bundle import load_weights
from lggseg.train.run_folder import RunFolder

pytestmark = pytest.mark.slow

TINY = {
    "fold": 1,  # the bundled patients are fold 0, so for fold 1 they are training/validation patients
    "n_validation": 1,
    "epochs": 1,
    "samples_per_epoch": 16,
    "batch_size": 8,
    "threads": 1,
    "calibrate": True,
    "model": {"base_width": 4, "depth": 2},
}


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sample_dir) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = root / "run"
    assert run_cli(["train", "--data", str(sample_dir), "--config", str(config), "--out", str(run)]) == 0
    return run


def test_train_writes_checkpoints_curves_log_config(trained_run):
    names = sorted(p.name for p in trained_run.iterdir())
    assert names == [
        "best.safetensors",
        "calibration.json",
        "checkpoint.safetensors",
        "config.yaml",
        "curves.png",
        "log.csv",
        "split.json",
    ]
    rows = list(csv.DictReader((trained_run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    assert float(rows[0]["train_loss"]) > 0
    # the log, the checkpoint, the best weights and the calibration tell the same story
    state = RunFolder(trained_run).state()
    assert state["epoch"] == 0 and state["best_epoch"] == 0
    assert float(rows[0]["val_dice"]) == pytest.approx(state["history"][0]["val_dice"], rel=1e-5)
    best = load_weights(trained_run)
    assert best.info["epoch"] == 0 and best.info["val_dice"] == state["history"][0]["val_dice"]
    calibration = json.loads((trained_run / "calibration.json").read_text())
    split = json.loads((trained_run / "split.json").read_text())
    assert calibration["validation_patients"] == split["validation"] and len(split["train"]) == 1
    assert best.post.to_dict().items() <= calibration["chosen"].items()  # the chosen rule is in the weights
    assert RunFolder(trained_run).finished()


def test_resume_continues_from_last_epoch(trained_run, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 0
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert RunFolder(run).state()["epoch"] == 1
    assert [row["epoch"] for row in RunFolder(run).state()["history"]] == [1, 2]


def test_evaluate_writes_metrics_contract_and_plots(trained_run, sample_dir, tmp_path):
    out = tmp_path / "ev"
    assert run_cli(["evaluate", "--data", str(sample_dir), "--weights", str(trained_run), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    for key in ("mean_dice", "median_dice", "min_dice", "n_patients", "per_patient"):
        assert key in report
    assert report["n_patients"] == 2
    for row in report["per_patient"]:
        assert {"patient", "dice", "iou", "hd95", "volume_true", "volume_pred"} <= row.keys()
    for name in ("per_patient.csv", "dice_per_patient.png", "overlays.png"):
        assert (out / name).stat().st_size > 0


def test_evaluate_fold_selects_test_patients(trained_run, sample_dir, tmp_path):
    out = tmp_path / "ev0"
    assert (
        run_cli(
            ["evaluate", "--data", str(sample_dir), "--weights", str(trained_run), "--fold", "0", "--out", str(out)]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["n_patients"] == 2
    assert (
        run_cli(
            ["evaluate", "--data", str(sample_dir), "--weights", str(trained_run), "--fold", "3", "--out", str(out)]
        )
        == 2
    )


def test_predict_patient_folder(trained_run, sample_patient, tmp_path):
    out = tmp_path / "pred"
    assert (
        run_cli(["predict", str(sample_patient), "--weights", str(trained_run / "best.safetensors"), "--out", str(out)])
        == 0
    )
    case = out / sample_patient.name
    assert len(list((case / "masks").glob("*_mask.png"))) == 20
    assert len(list((case / "overlays").glob("*_overlay.png"))) == 20
    assert (case / f"{sample_patient.name}_mask.nii.gz").is_file()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 20 and rows[0]["case"] == sample_patient.name
