"""Cross-validation (lggseg.train.cv, ``lggseg cv``): folds run separately, skipped when done, merged.

The bundled sample has 2 patients, both in canonical fold 0. The tiny data set here adds two
patients under real fold-1 patient IDs whose slices are copies of the sample's, so that folds 0
and 1 each have 2 test patients and 2 training patients (1 of them for validation). The numbers
mean nothing (the fold-1 "patients" are copies of fold-0 ones); the bookkeeping is what is tested.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lggseg.commands.cli import main
from lggseg.data.splits import canonical_folds, fold_of
from lggseg.evaluation import error_budget
from lggseg.infer.ensemble import cv_fold_weights

pytestmark = pytest.mark.slow

FOLD1_IDS = canonical_folds()[1][:2]

TINY_RECIPE = """\
n_validation: 1
epochs: 1
samples_per_epoch: 8
batch_size: 4
bf16: "off"
threads: 1
calibrate: true
model: {base_width: 4, depth: 2}
"""


@pytest.fixture()
def two_fold_data(tmp_path: Path, sample_dir: Path) -> Path:
    """``tmp/kaggle_3m`` with the 2 real fold-0 sample patients and 2 copies named as fold-1 patients."""
    root = tmp_path / "kaggle_3m"
    sources = sorted(p for p in sample_dir.iterdir() if p.is_dir())
    for source in sources:
        shutil.copytree(source, root / source.name)
    for source, name in zip(sources, FOLD1_IDS):
        (root / name).mkdir()
        for file in source.iterdir():
            shutil.copyfile(file, root / name / file.name.replace(source.name, name))
    assert sorted(fold_of(p.name) for p in root.iterdir()) == [0, 0, 1, 1]
    return root


@pytest.fixture(autouse=True)
def restore_threads():
    """Training in this process sets torch's thread count (threads: 1); put it back afterwards."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


@pytest.mark.slow
def test_cv_folds_run_separately_then_merge(tmp_path: Path, two_fold_data: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    cv = tmp_path / "cv"
    base = ["cv", "--data", str(two_fold_data), "--config", str(recipe), "--out", str(cv), "--folds", "2"]

    assert run_cli(*base, "--only-fold", "0") == 0
    assert (cv / "fold_0" / "test" / "metrics.json").exists()
    assert not (cv / "metrics.json").exists(), "no report while fold 1 is missing"
    assert "waits for fold(s) 1" in capsys.readouterr().out

    assert run_cli(*base, "--merge-only") == 2
    assert "fold(s) 1 are not finished" in capsys.readouterr().err

    assert run_cli(*base, "--only-fold", "1") == 0  # the last fold merges the report
    report = json.loads((cv / "metrics.json").read_text())
    names = sorted(p.name for p in two_fold_data.iterdir())
    assert sorted(row["patient"] for row in report["per_patient"]) == names  # each patient exactly once
    assert {row["patient"]: row["fold"] for row in report["per_patient"]} == {n: fold_of(n) for n in names}
    for key in ("mean_dice", "median_dice", "min_dice", "n_patients", "per_patient"):
        assert key in report
    for row in report["per_patient"]:
        assert {"patient", "dice", "iou", "hd95", "volume_true", "volume_pred"} <= set(row)
    assert report["n_patients"] == 4 and report["n_folds"] == 2 and not report["complete"]
    dices = [row["dice"] for row in report["per_patient"]]
    assert report["mean_dice"] == pytest.approx(sum(dices) / 4) and report["min_dice"] == min(dices)
    low, high = report["mean_dice_ci95"]
    assert min(dices) <= low <= report["mean_dice"] <= high <= max(dices)
    assert sum(row["n_patients"] for row in report["institutions"]) == 4
    assert sum(row["n_patients"] for row in report["tumor_sizes"]) == 4
    assert (cv / "per_tumor_size.csv").read_text().startswith("tumor_voxels,n_patients,mean_dice")
    assert (cv / "per_fold.csv").read_text().count("\n") == 3  # header + 2 folds
    assert (cv / "dice_by_group.png").stat().st_size > 10_000
    fold_reports = [json.loads((cv / f"fold_{k}" / "test" / "metrics.json").read_text()) for k in range(2)]
    assert [f["mean_dice"] for f in report["folds"]] == [r["mean_dice"] for r in fold_reports]
    # the error budgets of the two fold reports pooled: each patient's budget gives back its Dice
    budgets = report["error_budget"]["per_patient"]
    assert budgets == {
        **fold_reports[0]["error_budget"]["per_patient"],
        **fold_reports[1]["error_budget"]["per_patient"],
    }
    for row in report["per_patient"]:
        assert error_budget.dice_without(budgets[row["patient"]]) == pytest.approx(row["dice"])
    assert report["error_budget"]["n_patients"] == 4
    assert report["error_budget"]["mean_dice"] == pytest.approx(report["mean_dice"])
    assert len((cv / "per_patient.csv").read_text().splitlines()) == 5
    assert (cv / "dice_per_patient.png").stat().st_size > 0 and (cv / "overlays.png").stat().st_size > 0

    # a rerun of the whole CV trains nothing and rebuilds the same report
    weights = cv / "fold_0" / "run" / "best.safetensors"
    before = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(*base) == 0
    out = capsys.readouterr().out
    assert out.count("trained already") == 2 and out.count("test report up to date") == 2
    assert weights.stat().st_mtime_ns == before
    assert json.loads((cv / "metrics.json").read_text())["per_patient"] == report["per_patient"]

    # folds 2-4 have no patient in this folder: the full 5-fold CV is the same report, complete
    assert run_cli(*base[:-2], "--merge-only") == 0
    full = json.loads((cv / "metrics.json").read_text())
    assert (
        full["complete"] and full["n_patients"] == 4 and "fold 2: none of its test patients" in capsys.readouterr().out
    )

    # a fold report written before the error budget existed: the merged report goes without one
    fold_1_report = cv / "fold_1" / "test" / "metrics.json"
    older = json.loads(fold_1_report.read_text())
    del older["error_budget"]
    fold_1_report.write_text(json.dumps(older))
    assert run_cli(*base, "--merge-only") == 0
    merged = json.loads((cv / "metrics.json").read_text())
    assert "error_budget" not in merged and merged["per_patient"] == report["per_patient"]

    # a published copy (no checkpoints, as scripts/publish_cv.sh makes it) is calibrated again and merged again
    published = tmp_path / "published"
    shutil.copytree(cv, published, ignore=shutil.ignore_patterns("checkpoint.safetensors", "metrics.json"))
    assert cv_fold_weights(published) == [published / f"fold_{k}" / "run" / "best.safetensors" for k in (0, 1)]
    assert run_cli("calibrate", str(published / "fold_0" / "run"), "--data", str(two_fold_data)) == 0
    assert run_cli(*base[:6], str(published), "--folds", "2", "--merge-only") == 0
    again = json.loads((published / "metrics.json").read_text())
    assert sorted(row["patient"] for row in again["per_patient"]) == names
    assert (published / "fold_1" / "test" / "metrics.json").exists() and not (
        published / "fold_1" / "run" / "checkpoint.safetensors"
    ).exists()


def test_cv_refuses_a_different_recipe_for_existing_folds(
    tmp_path: Path, two_fold_data: Path, capsys: pytest.CaptureFixture
) -> None:
    from lggseg.train.config import config_from_dict, dump_config

    cv = tmp_path / "cv"
    run = cv / "fold_0" / "run"
    run.mkdir(parents=True)
    cfg = config_from_dict({"data": str(two_fold_data), "out": str(run), "lr": 0.001})
    (run / "state.json").write_text(json.dumps({"config": cfg.to_dict(), "epoch": 0, "best_epoch": 0}))
    (tmp_path / "other.yaml").write_text(dump_config(cfg.replace(lr=0.002)))
    assert (
        run_cli(
            "cv",
            "--data",
            str(two_fold_data),
            "--config",
            str(tmp_path / "other.yaml"),
            "--out",
            str(cv),
            "--only-fold",
            "0",
        )
        == 2
    )
    assert "different config (lr: 0.001 vs 0.002)" in capsys.readouterr().err
