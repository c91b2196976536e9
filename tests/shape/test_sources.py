"""Mask sources: out-of-fold weights per patient, NIfTI round trips, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lggseg.data.splits import canonical_folds
from lggseg.errors import LggsegError
from lggseg.shape import sources

FOLD0 = ["TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"]  # the bundled sample: both in canonical fold 0
FOLD1 = canonical_folds()[1][0]


def _cv(tmp_path: Path, folds: list[int]) -> Path:
    """A CV folder whose fold files exist (their content is not read by cv_weights)."""
    for k in folds:
        path = tmp_path / "cv" / f"fold_{k}" / "run" / "best.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")
    return tmp_path / "cv"


def test_each_patient_gets_its_own_folds_weights(tmp_path: Path) -> None:
    cv = _cv(tmp_path, [0, 1])
    weights = sources.cv_weights(cv, [*FOLD0, FOLD1])
    assert weights == {
        FOLD0[0]: cv / "fold_0/run/best.safetensors",
        FOLD0[1]: cv / "fold_0/run/best.safetensors",
        FOLD1: cv / "fold_1/run/best.safetensors",
    }


def test_only_the_needed_folds_must_exist(tmp_path: Path) -> None:
    cv = _cv(tmp_path, [0])  # folds 1-4 absent: fine for fold-0 patients
    assert set(sources.cv_weights(cv, FOLD0).values()) == {cv / "fold_0/run/best.safetensors"}


def test_a_missing_fold_is_named_and_never_replaced(tmp_path: Path) -> None:
    cv = _cv(tmp_path, [0, 2, 3, 4])
    with pytest.raises(LggsegError) as error:
        sources.cv_weights(cv, [*FOLD0, FOLD1])
    message = str(error.value)
    assert "fold 1 (1 patient(s)): no fold_1/run/best.safetensors" in message
    assert "fold 0" not in message and "\n" not in message


def test_an_unfinished_fold_is_refused_by_the_run_check(tmp_path: Path) -> None:
    cv = _cv(tmp_path, [0])
    with pytest.raises(LggsegError, match=r"fold 0 \(2 patient\(s\)\): still training"):
        sources.cv_weights(cv, FOLD0, check_run=lambda run: "still training")
    assert sources.cv_weights(cv, FOLD0, check_run=lambda run: None)


def test_patients_outside_the_split_and_missing_folders_are_refused(tmp_path: Path) -> None:
    cv = _cv(tmp_path, [0, 1, 2, 3, 4])
    with pytest.raises(LggsegError, match="not in the canonical 5-fold split"):
        sources.cv_weights(cv, ["TCGA_XX_0000_20000101"])
    with pytest.raises(LggsegError, match="no such cross-validation folder"):
        sources.cv_weights(tmp_path / "absent", FOLD0)


def test_saved_masks_read_back_exactly_with_their_spacing(tmp_path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(1)
    mask = rng.random((5, 12, 9)) > 0.6  # H != W, random: a wrong axis order or flip would show
    sources.save_mask(mask, tmp_path / "m" / "TCGA_CS_4944_20010208_mask.nii.gz", spacing=(2.5, 0.8, 0.9))
    loaded = sources.folder_source(tmp_path / "m")("TCGA_CS_4944_20010208")
    assert loaded is not None and loaded.dtype == bool
    np.testing.assert_array_equal(loaded, mask)
    image = nib.load(str(tmp_path / "m" / "TCGA_CS_4944_20010208_mask.nii.gz"))
    assert image.header.get_zooms() == pytest.approx((0.9, 0.8, 2.5))  # NIfTI axes are (x, y, z)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_an_empty_or_unreadable_mask_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LggsegError, match="no NIfTI"):
        sources.folder_source(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "P_mask.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(LggsegError, match="cannot read NIfTI"):
        sources.folder_source(tmp_path / "bad")("P")


def test_patient_id_drops_the_date() -> None:
    assert sources.patient_id("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
    assert sources.patient_id("TCGA_CS_4941") == "TCGA_CS_4941"
