"""End to end: a tiny synthetic cohort in the kaggle_3m layout, with and without data.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lggseg.errors import LggsegError
from lggseg.io.nifti import save_volume
from lggseg.shape import report
from lggseg.shape.features import FEATURE_COLUMNS
from lggseg.shape.sources import MaskOrigin

N_PATIENTS = 8
SLICES, SIZE = 7, 40


def _mask(i: int) -> np.ndarray:
    """``(Z, H, W)`` bool: an ellipsoid whose shape changes with i (bumpy for odd i), not symmetric."""
    z, y, x = np.ogrid[:SLICES, :SIZE, :SIZE]
    a, b = 6 + i, 10 + (i % 3) * 3
    body = ((z - 3) / 2.6) ** 2 + ((y - 17) / a) ** 2 + ((x - 21) / b) ** 2 <= 1
    if i % 2:
        body |= ((z - 3) / 1.5) ** 2 + ((y - 17 - a) / 3) ** 2 + ((x - 21) / 3) ** 2 <= 1
    return body


def _name(i: int) -> str:
    return f"TCGA_XX_{1000 + i}_2001010{i}"


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """``tmp/kaggle_3m/<patient>/<patient>_<n>[_mask].tif`` and a data.csv; returns the parent."""
    root = tmp_path / "kaggle_3m"
    rng = np.random.default_rng(0)
    for i in range(N_PATIENTS):
        folder = root / _name(i)
        folder.mkdir(parents=True)
        mask = _mask(i)
        for n in range(SLICES):
            image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f"{_name(i)}_{n + 1}.tif")
            Image.fromarray(mask[n].astype(np.uint8) * 255).save(folder / f"{_name(i)}_{n + 1}_mask.tif")
    with open(root / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Patient", "RNASeqCluster", "CNCluster", "age_at_initial_pathologic"])
        for i in range(N_PATIENTS):
            writer.writerow([f"TCGA_XX_{1000 + i}", str(1 + i % 2), "" if i == 0 else str(1 + i % 3), 40 + i])
    return tmp_path


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_truth_run_writes_every_file_with_the_right_columns(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = report.run_shape_analysis(cohort, out, masks="truth", per_feature_plots=False, log=lambda _: None)
    assert result["n_patients"] == N_PATIENTS
    header, rows = _read_csv(out / "features.csv")
    assert header == list(FEATURE_COLUMNS)
    assert [r["patient"] for r in rows] == [_name(i) for i in range(N_PATIENTS)]
    assert [int(r["volume_voxels"]) for r in rows] == [int(_mask(i).sum()) for i in range(N_PATIENTS)]
    assert all(r["volume_ml"] == "" for r in rows)  # no spacing: no mL
    header, assoc = _read_csv(out / "associations.csv")
    assert header == list(report.ASSOCIATION_COLUMNS)
    # 8 features with values (volume_ml is empty) x 2 subtypes x 2 tests x 2 corrections
    assert len(assoc) == 8 * 2 * 2 * 2
    assert {r["genomic"] for r in assoc} == {"RNASeqCluster", "CNCluster"}
    assert {r["test"] for r in assoc} == {"fisher", "kruskal"}
    assert {r["correction"] for r in assoc} == {"bonferroni", "holm"}
    assert {r["n"] for r in assoc if r["genomic"] == "CNCluster"} == {str(N_PATIENTS - 1)}  # one blank cluster
    for r in assoc:
        if r["p_value"]:
            assert float(r["p_value"]) <= float(r["p_corrected"]) <= 1.0
    assert (out / "boxplots.png").stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "Associations beside the paper" in text and "< 0.0002" in text and "100 patients" in text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_without_data_csv_only_features_are_written(cohort: Path, tmp_path: Path) -> None:
    (cohort / "kaggle_3m" / "data.csv").unlink()
    out = tmp_path / "plain"
    report.run_shape_analysis(cohort / "kaggle_3m", out, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["features.csv", "report.md"]
    assert "features only" in (out / "report.md").read_text()


def test_mask_folders_nifti_and_png_read_back_exactly(tmp_path: Path) -> None:
    truth = _mask(3)[:, :, :33]  # H != W and no symmetry: a wrong axis order or flip would show
    nifti_dir, png_dir = tmp_path / "nifti", tmp_path / "png"
    name = _name(3)
    save_volume(truth.astype(np.uint8), nifti_dir / name / f"{name}_mask.nii.gz")  # as lggseg predict writes it
    save_volume(np.zeros_like(truth, np.uint8), nifti_dir / name / f"{name}_flair.nii.gz")
    (png_dir / name / "masks").mkdir(parents=True)
    for n, sl in enumerate(truth, 1):
        Image.fromarray(sl.astype(np.uint8) * 255).save(png_dir / name / "masks" / f"{name}_{n}_mask.png")
    for folder in (nifti_dir, png_dir):
        loaded = report.folder_source(folder)(name)
        assert loaded is not None and loaded.dtype == bool
        np.testing.assert_array_equal(loaded, truth)
        assert report.folder_source(folder)("TCGA_XX_9999_20000101") is None
    np.testing.assert_array_equal(report.folder_source(nifti_dir)("TCGA_XX_1003_19990101"), truth)  # by patient ID


def test_predicted_masks_give_the_automatic_vs_manual_section(cohort: Path, tmp_path: Path) -> None:
    def predict(name: str) -> np.ndarray:
        i = int(name.split("_")[2]) - 1000
        grown = _mask(i).copy()
        grown[:, 1:, :] |= grown[:, :-1, :]  # one pixel larger than the truth
        return grown

    out = tmp_path / "auto"
    result = report.run_shape_analysis(cohort, out, masks="predicted", predict_masks=predict, log=lambda _: None)
    for name in ("features.csv", "features_truth.csv", "agreement.csv", "auc.csv", "bland_altman.png"):
        assert (out / name).is_file(), name
    _, agreement = _read_csv(out / "agreement.csv")
    volume = next(r for r in agreement if r["feature"] == "volume_voxels")
    assert float(volume["mean_difference"]) > 0  # the automatic masks are larger
    assert float(volume["spearman_rho"]) > 0.9
    _, auc = _read_csv(out / "auc.csv")
    assert {r["cluster"] for r in auc} == {"1 vs rest", "2 vs rest"}
    assert all(0.0 <= float(r["auc_manual"]) <= 1.0 for r in auc)
    _, assoc = _read_csv(out / "associations.csv")
    assert {r["masks"] for r in assoc} == {"predicted", "truth"}
    assert "Automatic against manual masks" in (out / "report.md").read_text()
    assert result["comparison"]["n"] == N_PATIENTS
    with pytest.raises(LggsegError, match="no such mask folder"):
        report.run_shape_analysis(cohort, tmp_path / "none", masks=tmp_path / "absent", log=lambda _: None)


def _origin(i: int, fold: int, model_fold: int) -> MaskOrigin:
    return MaskOrigin(f"P{i}", fold, "w", "0" * 64, model_fold, "yes" if fold == model_fold else "no")


def test_the_report_says_plainly_when_masks_are_not_out_of_fold() -> None:
    origins = [_origin(i, i % 5, 0) for i in range(10)]  # a fold-0 model, patients of all folds
    note = report._model_note(origins, None, None)
    assert note.startswith(
        "**Not out-of-fold: the shipped model was trained on 8 of these 10 patients (most of them).**"
    )
    assert "held out canonical fold 0 only" in note and "2 patients are unseen" in note
    unseen = report._model_note([_origin(i, 0, 0) for i in range(3)], None, None)
    assert unseen.startswith("Out-of-fold for these patients") and "all 3 of them" in unseen
    assert report._model_note(origins, Path("CV"), None).startswith("Out-of-fold masks: each patient")
    unknown = [MaskOrigin("P", 0, "w", "0" * 64, None, "unknown")]
    assert report._model_note(unknown, None, "w.safetensors").startswith("**Not known to be out-of-fold.**")
