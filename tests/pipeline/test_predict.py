"""``predict`` on scanner-style inputs with the shipped model: one patient, many storages, one mask.

A sample patient (8 slices around its tumour, to stay fast) is written as NIfTI in several voxel
orientations with anisotropic spacing, as separate channel files, FLAIR alone and as a DICOM
series; every mask must be the one the slice folder gives, voxel for voxel in physical space.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lggseg.data.dataset import flair_only_images, index_dataset, load_patient
from lggseg.infer import postprocess
from lggseg.infer.segmenter import Segmenter
from lggseg.io.orientation import to_canonical
from lggseg.pipeline.predict import predict

SPACING = (3.0, 0.9, 0.8)  # canonical (z, y, x) mm: anisotropic, so a swapped axis is caught
ORIGIN = np.array([12.5, -20.0, 31.0])
STORAGES = {  # name -> (stored axis k = canonical axis perm[k], stored axes reversed)
    "RAS": ((2, 1, 0), (0, 1)),
    "LPS": ((2, 1, 0), ()),
    "LPS, axes permuted (P, L, S)": ((1, 2, 0), ()),
    "flipped and permuted (I, A, R)": ((0, 1, 2), (0, 1, 2)),
}


def canonical_affine() -> np.ndarray:
    """Canonical (z, h, w) -> RAS+ mm: z superior, h posterior, w patient-left."""
    aff = np.eye(4)
    aff[:3, :3] = 0.0
    aff[2, 0], aff[1, 1], aff[0, 2] = SPACING[0], -SPACING[1], -SPACING[2]
    aff[:3, 3] = ORIGIN
    return aff


def store(canon: np.ndarray, perm: tuple[int, int, int], flips: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The canonical ``(Z, H, W[, C])`` array stored with axes ``perm`` and ``flips``, and its affine."""
    arr = np.transpose(canon, (*perm, *range(3, canon.ndim)))
    index = np.zeros((4, 4))
    index[3, 3] = 1.0
    for k, c in enumerate(perm):
        if k in flips:
            arr = np.flip(arr, axis=k)
            index[c, k], index[c, 3] = -1.0, canon.shape[c] - 1
        else:
            index[c, k] = 1.0
    return np.ascontiguousarray(arr), canonical_affine() @ index


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: type = np.int16) -> Path:
    nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(path))
    return path


def mask_in_physical_space(path: Path) -> np.ndarray:
    """A mask NIfTI read back through its own affine: canonical ``(Z, H, W)`` bool."""
    image = nib.load(str(path))
    return to_canonical(np.asarray(image.dataobj), image.affine).array > 0


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_weights()


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory, sample_patient: Path) -> Path:
    """8 consecutive slices (5 with tumour) of a sample patient, as a kaggle_3m patient folder."""
    folder = tmp_path_factory.mktemp("in") / sample_patient.name
    folder.mkdir()
    for n in range(9, 17):
        for suffix in ("", "_mask"):
            name = f"{sample_patient.name}_{n}{suffix}.tif"
            shutil.copy(sample_patient / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, patient: Path, segmenter: Segmenter) -> dict:
    """The slice folder predicted: its mask (canonical) and its images."""
    out = tmp_path_factory.mktemp("ref")
    report = predict([patient], out, segmenter=segmenter, log=lambda m: None)
    assert not report.failures
    volume = load_patient(index_dataset(patient).patients[0])
    mask = mask_in_physical_space(out / patient.name / f"{patient.name}_mask.nii.gz")
    return {"mask": mask, "images": volume.images, "truth": volume.masks, "dice": report.cases[0].dice}


def test_the_reference_is_a_real_segmentation(reference):
    assert reference["mask"].shape == (8, 256, 256)
    assert 5000 < reference["mask"].sum() < 40000
    assert reference["dice"] > 0.85


def test_slice_folder_nifti_overlays_the_folder(tmp_path, patient, reference, segmenter):
    """The bug fixed: a slice folder's NIfTI is LAS with diag(-x, y, z), not RAS with the identity."""
    predict([patient], tmp_path, segmenter=segmenter, log=lambda m: None, spacing=SPACING)
    flair = nib.load(str(tmp_path / patient.name / f"{patient.name}_flair.nii.gz"))
    assert nib.aff2axcodes(flair.affine) == ("L", "A", "S")
    assert np.allclose(np.diag(flair.affine), [-SPACING[2], SPACING[1], SPACING[0], 1.0])
    canonical = to_canonical(np.asarray(flair.dataobj), flair.affine)
    assert np.array_equal(canonical.array, reference["images"][..., 1])
    assert canonical.spacing_mm == pytest.approx(SPACING)


@pytest.mark.parametrize("storage", list(STORAGES))
def test_every_orientation_gives_the_slice_folder_mask(tmp_path, storage, reference, segmenter):
    stored, affine = store(reference["images"], *STORAGES[storage])
    scan = save_nifti(tmp_path / "scan.nii.gz", stored, affine)
    out = tmp_path / "out"
    report = predict([scan], out, segmenter=segmenter, log=lambda m: None)
    assert not report.failures
    written = nib.load(str(out / "scan" / "scan_mask.nii.gz"))
    assert written.shape == stored.shape[:3] and np.allclose(written.affine, affine)
    assert np.array_equal(mask_in_physical_space(out / "scan" / "scan_mask.nii.gz"), reference["mask"])
    voxels = int(reference["mask"].sum())
    assert report.cases[0].voxels == voxels
    assert report.cases[0].volume_ml == pytest.approx(voxels * np.prod(SPACING) / 1000)
    record = json.loads((out / "scan" / "scan.json").read_text())
    assert record["channels"] == "pre-contrast, FLAIR, post-contrast" and record["warnings"] == []
    assert record["grid"]["spacing_mm_zyx"] == pytest.approx(list(SPACING))
    assert record["tumor"]["ml"] == pytest.approx(voxels * np.prod(SPACING) / 1000, abs=1e-4)


def test_separate_channel_files_equal_the_4d_volume(tmp_path, reference, segmenter):
    """One grid, stored in three voxel orders (as different converters write it): the same mask."""
    files = {}
    for c, (role, storage) in enumerate(zip("abc", ["LPS, axes permuted (P, L, S)", "RAS", "LPS"])):
        stored, affine = store(reference["images"][..., c], *STORAGES[storage])
        files[role] = save_nifti(tmp_path / f"{role}.nii.gz", stored, affine)
    report = predict(
        [], tmp_path / "out", segmenter=segmenter, log=lambda m: None, pre=files["a"], flair=files["b"], post=files["c"]
    )
    assert [c.name for c in report.cases] == ["b"] and not report.failures
    assert np.array_equal(mask_in_physical_space(tmp_path / "out" / "b" / "b_mask.nii.gz"), reference["mask"])


def test_channel_files_on_different_grids_are_refused(tmp_path, reference, segmenter):
    stored, affine = store(reference["images"], *STORAGES["LPS"])
    flair = save_nifti(tmp_path / "flair.nii.gz", stored[..., 1], affine)
    shifted = affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 1.5]
    pre = save_nifti(tmp_path / "pre.nii.gz", stored[..., 0], shifted)
    cropped = save_nifti(tmp_path / "post.nii.gz", stored[:-1, :, :, 2], affine)
    for kwargs, message in (({"pre": pre}, "affines differ by up to 1.5 mm"), ({"post": cropped}, "(8, 256, 255)")):
        report = predict([], tmp_path / "out", segmenter=segmenter, log=lambda m: None, flair=flair, **kwargs)
        assert not report.cases and len(report.failures) == 1
        assert "are not on one grid" in report.failures[0] and message in report.failures[0]


def test_flair_alone_is_presented_by_the_one_function(tmp_path, reference, segmenter):
    stored, affine = store(reference["images"][..., 1], *STORAGES["RAS"])
    scan = save_nifti(tmp_path / "flair.nii.gz", stored, affine)
    report = predict([scan], tmp_path / "out", segmenter=segmenter, log=lambda m: None)
    expected = postprocess.apply(
        segmenter.probabilities(flair_only_images(reference["images"][..., 1])), segmenter.bundle.post
    )
    assert np.array_equal(mask_in_physical_space(tmp_path / "out" / "flair" / "flair_mask.nii.gz"), expected)
    assert report.cases[0].voxels == int(expected.sum())
    record = json.loads((tmp_path / "out" / "flair" / "flair.json").read_text())
    assert record["channels"].startswith("FLAIR only")


def test_threshold_override_and_probabilities_on_the_input_grid(tmp_path, reference, segmenter):
    stored, affine = store(reference["images"], *STORAGES["LPS, axes permuted (P, L, S)"])
    scan = save_nifti(tmp_path / "scan.nii.gz", stored, affine)
    report = predict([scan], tmp_path / "out", segmenter=segmenter, log=lambda m: None, threshold=0.9,
                     save_probabilities=True)  # fmt: skip
    prob_image = nib.load(str(tmp_path / "out" / "scan" / "scan_probability.nii.gz"))
    assert prob_image.get_data_dtype() == np.float32 and prob_image.shape == stored.shape[:3]
    assert np.allclose(prob_image.affine, affine)
    prob = to_canonical(np.asarray(prob_image.dataobj), prob_image.affine).array
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    rules = segmenter.bundle.post
    strict = postprocess.apply(prob, type(rules)(**{**rules.to_dict(), "threshold": 0.9}))
    assert np.array_equal(mask_in_physical_space(tmp_path / "out" / "scan" / "scan_mask.nii.gz"), strict)
    assert 0 < strict.sum() < reference["mask"].sum()
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert {r["threshold"] for r in rows} == {"0.9"} and report.cases[0].voxels == int(strict.sum())
    record = json.loads((tmp_path / "out" / "scan" / "scan.json").read_text())
    assert record["threshold"] == 0.9 and record["threshold_from"] == "--threshold"


def test_summary_has_voxels_and_millilitres_and_the_input_slice_numbers(tmp_path, patient, segmenter):
    predict([patient], tmp_path, segmenter=segmenter, log=lambda m: None, spacing=(2.0, 0.5, 0.5))
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [int(r["slice"]) for r in rows] == list(range(9, 17))  # the files' own numbers
    voxels = int(rows[0]["case_tumor_volume_voxels"])
    assert sum(int(r["tumor_area_px"]) for r in rows) == voxels
    assert float(rows[0]["case_tumor_volume_ml"]) == pytest.approx(voxels * 0.5 / 1000, abs=1e-3)
    assert float(rows[0]["case_tumor_volume_mm3"]) == pytest.approx(voxels * 0.5, abs=0.1)
    assert float(rows[4]["tumor_area_mm2"]) == pytest.approx(int(rows[4]["tumor_area_px"]) * 0.25, abs=0.1)


def test_oblique_scan_is_warned_about_with_its_angle(tmp_path, reference, segmenter):
    stored, affine = store(reference["images"], *STORAGES["LPS"])
    t = np.radians(30.0)
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    scan = save_nifti(tmp_path / "tilted.nii.gz", stored, tilt @ affine)
    notes: list[str] = []
    report = predict([scan], tmp_path / "out", segmenter=segmenter, log=notes.append)
    assert report.cases and any("oblique: 30.0 deg" in n and n.startswith("warning: tilted:") for n in notes)


def test_dicom_series_gives_a_nifti_mask_and_a_seg_on_the_series(tmp_path, reference, segmenter):
    pytest.importorskip("highdicom")
    from lggseg.io.dicom import read_series
    from tests.io.test_dicom import decode_seg, write_series

    flair = reference["images"][..., 1]
    write_series(tmp_path / "AX_FLAIR", flair.astype(np.uint16), seed=2)
    report = predict([tmp_path], tmp_path / "out", segmenter=segmenter, log=lambda m: None)  # a folder of series
    assert [c.name for c in report.cases] == ["AX_FLAIR"] and not report.failures
    case = tmp_path / "out" / "AX_FLAIR"
    expected = postprocess.apply(segmenter.probabilities(flair_only_images(flair)), segmenter.bundle.post)
    assert np.array_equal(mask_in_physical_space(case / "AX_FLAIR_mask.nii.gz"), expected)
    volume, affine, info = read_series(tmp_path / "AX_FLAIR")
    mask_image = nib.load(str(case / "AX_FLAIR_mask.nii.gz"))
    assert mask_image.shape == volume.shape and np.allclose(mask_image.affine, affine)
    seg = decode_seg(case / "AX_FLAIR_seg.dcm", info.sop_instance_uids)  # (Z, rows, cols) in series order
    assert np.array_equal(seg, expected)  # an axial LPS series: frame k is canonical slice k
    assert report.cases[0].volume_ml == pytest.approx(expected.sum() * 0.8 * 0.9 * 3.0 / 1000)
