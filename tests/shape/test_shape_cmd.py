"""``lggseg shape`` through Typer's CliRunner, with a tiny untrained cross-validation folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from lggseg.commands.shape_cmd import parse_spacing, register
from lggseg.errors import LggsegError
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.shape.sources import folder_source

PATIENTS = ["TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"]  # the bundled sample, canonical fold 0
SLICES, SIDE = 20, 256


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.callback()
    def _root() -> None:  # a group, so that `shape` is a subcommand as in lggseg
        pass

    register(app)
    return app


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["shape", *args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _weights(path: Path, bias: float, fold: int, trained_on: list[str] | None = None) -> None:
    """An untrained tiny U-Net whose output is all tumor (bias > 0) or none (bias < 0)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=2, depth=1))
    with torch.no_grad():
        model.head.bias.fill_(bias)
    save_weights(path, model, info={"fold": fold, **({"trained_on": trained_on} if trained_on is not None else {})})


@pytest.fixture()
def cv_dir(tmp_path: Path) -> Path:
    """Fold 0's model predicts nothing; folds 1-4 predict everything. Only fold 0 may be used."""
    for k in range(5):
        _weights(tmp_path / "cv" / f"fold_{k}" / "run" / "best.safetensors", -100.0 if k == 0 else 100.0, k)
    return tmp_path / "cv"


@pytest.fixture()
def data_with_csv(tiny_dataset: Path) -> Path:
    with open(tiny_dataset / "data.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["Patient", "RNASeqCluster"], ["TCGA_CS_4944", "1"], ["TCGA_CS_6667", "2"]])
    return tiny_dataset


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predicted_with_cv_uses_each_patients_own_fold(data_with_csv: Path, cv_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _invoke(
        "--data",
        str(data_with_csv),
        "--masks",
        "predicted",
        "--cv",
        str(cv_dir),
        "--out",
        str(out),
        "--save-masks",
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    assert "2 patients; report:" in stdout
    predicted = _rows(out / "features.csv")
    assert [(r["patient"], r["volume_voxels"]) for r in predicted] == [(p, "0") for p in PATIENTS]  # fold 0's model
    truth = {r["patient"]: int(r["volume_voxels"]) for r in _rows(out / "features_truth.csv")}
    assert set(truth) == set(PATIENTS) and all(0 < v < SLICES * SIDE * SIDE for v in truth.values())
    origins = _rows(out / "mask_sources.csv")
    assert [r["weights"] for r in origins] == [str(cv_dir / "fold_0/run/best.safetensors")] * 2
    assert {(r["fold"], r["model_fold"], r["out_of_fold"]) for r in origins} == {("0", "0", "yes")}
    for patient in PATIENTS:  # the saved out-of-fold masks read back through --masks MASK_DIR
        mask = folder_source(out / "masks")(patient)
        assert mask is not None and mask.shape == (SLICES, SIDE, SIDE) and not mask.any()
    agreement = {r["feature"]: r for r in _rows(out / "agreement.csv")}
    assert agreement["volume_voxels"]["n"] == "2" and (out / "bland_altman.png").is_file()  # < 3 pairs: no numbers
    assert {r["cluster"] for r in _rows(out / "auc.csv")} == {"1 vs rest", "2 vs rest"}
    assert {r["masks"] for r in _rows(out / "associations.csv")} == {"predicted", "truth"}
    text = (out / "report.md").read_text()
    assert "Out-of-fold masks" in text and "Automatic against manual masks" in text
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_a_missing_fold_is_a_clear_error(data_with_csv: Path, cv_dir: Path, tmp_path: Path) -> None:
    (cv_dir / "fold_0" / "run" / "best.safetensors").unlink()
    code, _, stderr = _invoke(
        "--data", str(data_with_csv), "--masks", "predicted", "--cv", str(cv_dir), "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert "fold 0 (2 patient(s)): no fold_0/run/best.safetensors" in stderr and "fold 1" not in stderr
    assert not (tmp_path / "o").exists()


def test_an_unfinished_fold_is_refused(data_with_csv: Path, cv_dir: Path, tmp_path: Path) -> None:
    state = {"epoch": 2, "best_epoch": 2, "config": {"epochs": 50}}
    (cv_dir / "fold_0" / "run" / "state.json").write_text(json.dumps(state))  # a run still training
    code, _, stderr = _invoke(
        "--data", str(data_with_csv), "--masks", "predicted", "--cv", str(cv_dir), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "still training or was interrupted (epoch 3 of 50)" in stderr


def test_one_model_says_which_patients_it_saw(data_with_csv: Path, tmp_path: Path) -> None:
    _weights(tmp_path / "w.safetensors", -100.0, fold=1)  # held out fold 1: trained on the sample's fold 0
    out = tmp_path / "out"
    code, _, stderr = _invoke(
        "--data",
        str(data_with_csv),
        "--masks",
        "predicted",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    text = (out / "report.md").read_text()
    model = tmp_path / "w.safetensors"
    assert f"**Not out-of-fold: the model `{model}` was trained on 2 of these 2 patients (most of them).**" in text
    assert {r["out_of_fold"] for r in _rows(out / "mask_sources.csv")} == {"no"}
    assert not (out / "masks").exists()


@pytest.mark.parametrize("trained_on", [["TCGA_DU_5849_19950405"], ["TCGA_DU_5849_19950405", PATIENTS[0]]])
def test_final_model_counts_the_patients_its_weights_list(
    data_with_csv: Path, tmp_path: Path, trained_on: list[str]
) -> None:
    """A final model (fold -1) says per patient whether it saw it from the ``trained_on`` list of its weights."""
    _weights(tmp_path / "w.safetensors", -100.0, fold=-1, trained_on=trained_on)
    out = tmp_path / "out"
    args = ["--data", str(data_with_csv), "--masks", "predicted", "--weights", str(tmp_path / "w.safetensors")]
    code, _, stderr = _invoke(*args, "--out", str(out), "--device", "cpu")
    assert code == 0, stderr
    text = (out / "report.md").read_text()
    origin = {r["patient"]: r["out_of_fold"] for r in _rows(out / "mask_sources.csv")}
    if PATIENTS[0] in trained_on:
        assert origin == {PATIENTS[0]: "no", PATIENTS[1]: "yes"}
        assert "was trained on 1 of these 2 patients.** Its weights list the patients it was trained on" in text
    else:
        assert origin == {PATIENTS[0]: "yes", PATIENTS[1]: "yes"}
        assert "never saw any of these 2 patients in training" in text
    assert "fold -1" not in text


@pytest.mark.slow
def test_shipped_model_is_out_of_fold_for_the_demo_patients(sample_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = _invoke("--data", str(sample_dir), "--masks", "predicted", "--out", str(tmp_path / "o"))
    assert code == 0, stderr
    text = (tmp_path / "o" / "report.md").read_text()
    assert "(predictions of the shipped model)" in text
    assert "Out-of-fold for these patients: the shipped model never saw any of these 2 patients" in text
    volumes = [int(r["volume_voxels"]) for r in _rows(tmp_path / "o" / "features.csv")]
    assert len(volumes) == 2 and all(v > 0 for v in volumes)


def test_truth_with_spacing(sample_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = _invoke("--data", str(sample_dir), "--out", str(tmp_path / "o"), "--spacing", "2, 0.5,0.5")
    assert code == 0, stderr
    rows = _rows(tmp_path / "o" / "features.csv")
    assert [r["patient"] for r in rows] == PATIENTS
    assert all(float(r["volume_ml"]) == pytest.approx(int(r["volume_voxels"]) * 0.5 / 1000) for r in rows)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["features.csv", "report.md"]  # no data.csv


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spacing", "1,1"], "--spacing must be three positive numbers"),
        (["--spacing", "1,0,1"], "--spacing must be three positive numbers"),
        (["--save-masks"], "apply to --masks predicted, not to --masks truth"),
        (["--cv", "CV"], "apply to --masks predicted"),
        (["--masks", "no_such_folder"], "not truth, predicted or an existing mask folder"),
        (["--masks", "predicted", "--cv", "no_such_cv"], "no such cross-validation folder"),
        (["--masks", "predicted", "--weights", "no.safetensors"], "weights file not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    args: list[str], message: str, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _invoke("--data", str(sample_dir), "--out", "o", *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr


def test_parse_spacing() -> None:
    assert parse_spacing(None) is None
    assert parse_spacing("2.5,0.9,0.9") == (2.5, 0.9, 0.9)
    with pytest.raises(LggsegError):
        parse_spacing("a,b,c")
