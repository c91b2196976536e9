"""One physical object stored in many voxel orientations must come back as one canonical array.

The stored arrays and their affines are built here by hand (index bookkeeping, no nibabel), so a
``to_canonical`` that ignored or misread the affine would fail.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lggseg.errors import LggsegError
from lggseg.io.orientation import (
    CANONICAL_AXCODES,
    OBLIQUE_LIMIT_DEG,
    acquisition_plane,
    back_from_canonical,
    from_canonical,
    inplane_note,
    obliquity_degrees,
    orientation_warning,
    to_canonical,
)

SHAPE = (20, 64, 48)  # canonical (Z, H, W)
SPACING = (3.0, 0.5, 0.5)  # mm along (Z, H, W): thick axial slices
ORIGIN = np.array([-12.0, 31.0, -40.0])


def canonical_affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    """Canonical index (z, h, w) -> RAS+: z runs superior, h posterior, w patient-left."""
    aff = np.zeros((4, 4))
    aff[2, 0] = spacing[0]  # +S
    aff[1, 1] = -spacing[1]  # -A = posterior
    aff[0, 2] = -spacing[2]  # -R = left
    aff[:3, 3] = ORIGIN
    aff[3, 3] = 1.0
    return aff


def pattern(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Distinct values everywhere: any flip or permutation changes the array."""
    return np.random.default_rng(7).permutation(np.prod(shape)).reshape(shape).astype(np.int32)


def store(canon: np.ndarray, can_aff: np.ndarray, perm: tuple[int, int, int], flips: tuple[int, ...]):
    """Stored axis k is canonical axis perm[k], reversed when k in flips; return (array, affine)."""
    arr = np.transpose(canon, perm)
    for k in flips:
        arr = np.flip(arr, axis=k)
    index = np.zeros((4, 4))  # stored index (homogeneous) -> canonical index
    index[3, 3] = 1.0
    for k, c in enumerate(perm):
        if k in flips:
            index[c, k], index[c, 3] = -1.0, canon.shape[c] - 1
        else:
            index[c, k] = 1.0
    return np.ascontiguousarray(arr), can_aff @ index


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(4)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


NAMED = {  # (perm, flips) giving the named storage; codes are of stored axes 0, 1, 2
    "RAS": ((2, 1, 0), (0, 1)),
    "LPS (DICOM axial)": ((2, 1, 0), ()),
    "LAS (lggseg's NIfTI writer layout)": ((2, 1, 0), (1,)),
    "sagittal-major ASR": ((1, 0, 2), (0, 2)),
    "flipped SPL->IAR": ((0, 1, 2), (0, 1, 2)),
}
EXPECTED_CODES = {
    "RAS": ("R", "A", "S"),
    "LPS (DICOM axial)": ("L", "P", "S"),
    "LAS (lggseg's NIfTI writer layout)": ("L", "A", "S"),
    "sagittal-major ASR": ("A", "S", "R"),
    "flipped SPL->IAR": ("I", "A", "R"),
}


def test_canonical_codes_are_the_slice_stack_convention():
    assert CANONICAL_AXCODES == ("S", "P", "L")
    import nibabel as nib

    assert nib.aff2axcodes(canonical_affine()) == CANONICAL_AXCODES


@pytest.mark.parametrize("name", list(NAMED))
def test_named_orientations_give_the_same_canonical_array(name: str):
    canon = pattern()
    stored, aff = store(canon, canonical_affine(), *NAMED[name])
    result = to_canonical(stored, aff)
    assert result.input_axcodes == EXPECTED_CODES[name]
    assert result.array.shape == SHAPE
    assert np.array_equal(result.array, canon)
    assert result.spacing_mm == pytest.approx(SPACING)
    assert np.allclose(result.affine, canonical_affine())
    assert np.array_equal(from_canonical(result.array, result), stored)
    assert orientation_warning(aff) is None


def test_all_48_orientations_round_trip_and_are_distinct():
    canon = pattern()
    seen = set()
    for perm in itertools.permutations(range(3)):
        for nflip in range(4):
            for flips in itertools.combinations(range(3), nflip):
                stored, aff = store(canon, canonical_affine(), perm, flips)
                seen.add((stored.shape, stored.tobytes()))
                result = to_canonical(stored, aff)
                assert np.array_equal(result.array, canon), (perm, flips)
                assert result.spacing_mm == pytest.approx(SPACING), (perm, flips)
                assert np.array_equal(from_canonical(result.array, result), stored), (perm, flips)
    assert len(seen) == 48  # the test data can tell every orientation apart


def test_ignoring_the_affine_would_be_caught():
    canon = pattern()
    for name in ("LPS (DICOM axial)", "sagittal-major ASR"):
        stored, _ = store(canon, canonical_affine(), *NAMED[name])
        assert not np.array_equal(to_canonical(stored, np.eye(4)).array, canon), name


def test_mask_lands_on_the_same_physical_point():
    canon = pattern()
    point = (13, 40, 9)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[point] = 1
    world = canonical_affine() @ np.array([*point, 1.0])
    for name, (perm, flips) in NAMED.items():
        stored, aff = store(canon, canonical_affine(), perm, flips)
        back = from_canonical(mask, to_canonical(stored, aff))
        assert back.shape == stored.shape and back.sum() == 1
        idx = np.argwhere(back)[0]
        assert np.allclose(aff @ np.array([*idx, 1.0]), world), name


def test_oblique_5_degrees_is_taken_at_the_nearest_axes_without_warning():
    canon = pattern()
    for name, (perm, flips) in NAMED.items():
        stored, aff = store(canon, canonical_affine(), perm, flips)
        tilted = rotation(0, 5.0) @ rotation(2, 3.0) @ aff  # pitch 5 deg, then yaw 3 deg
        result = to_canonical(stored, tilted)
        assert np.array_equal(result.array, canon), name
        assert np.array_equal(from_canonical(result.array, result), stored), name
        assert result.spacing_mm == pytest.approx(SPACING)
        assert obliquity_degrees(tilted) == pytest.approx(5.0, abs=1e-6)
        assert orientation_warning(tilted) is None


def test_clinical_tilt_is_quiet_and_beyond_the_limit_warns_with_the_angle():
    assert OBLIQUE_LIMIT_DEG == 20.0  # clinical axial scans are often tilted 10-20 deg along AC-PC
    assert orientation_warning(rotation(0, 18.0) @ canonical_affine()) is None
    aff = rotation(0, 25.0) @ canonical_affine()
    assert obliquity_degrees(aff) == pytest.approx(25.0)
    message = orientation_warning(aff)
    assert message is not None and "25.0" in message and "oblique" in message
    assert orientation_warning(aff, limit_deg=30.0) is None


def test_back_from_canonical_needs_only_the_affine():
    canon = pattern()
    for name, (perm, flips) in NAMED.items():
        stored, aff = store(canon, canonical_affine(), perm, flips)
        assert np.array_equal(back_from_canonical(canon, aff), stored), name


def test_inplane_note_for_non_square_pixels():
    assert inplane_note((3.0, 0.9, 0.9)) is None and inplane_note((3.0, 1.0, 1.1)) is None
    note = inplane_note((3.0, 0.5, 1.0))
    assert note is not None and "0.5 x 1 mm" in note


def test_coronal_acquisition_warns_with_the_angle():
    spacing = (0.5, 4.0, 0.5)  # thick along anterior-posterior: coronal slices
    canon = pattern((40, 12, 48))
    stored, aff = store(canon, canonical_affine(spacing), (2, 0, 1), (0, 1, 2))  # slices stacked last
    assert acquisition_plane(aff) == "coronal"
    result = to_canonical(stored, aff)
    assert np.array_equal(result.array, canon)
    assert result.spacing_mm == pytest.approx(spacing)
    message = orientation_warning(aff)
    assert message is not None and "coronal" in message and "90.0 deg" in message


def test_sagittal_isotropic_acquisition_warns():
    canon = pattern((30, 32, 24))
    stored, aff = store(canon, canonical_affine((1.0, 1.0, 1.0)), (1, 0, 2), ())  # stored (H, Z, W)
    assert acquisition_plane(aff) == "sagittal"
    assert np.array_equal(to_canonical(stored, aff).array, canon)
    assert "sagittal" in (orientation_warning(aff) or "")


def test_4d_trailing_singleton_and_channels():
    canon = pattern()
    stored, aff = store(canon, canonical_affine(), *NAMED["RAS"])
    single = to_canonical(stored[..., None], aff)
    assert np.array_equal(single.array, canon) and single.input_shape == (*stored.shape, 1)
    assert from_canonical(single.array, single).shape == stored.shape
    channels = np.stack([stored, stored + 1, stored * 2], axis=-1)
    multi = to_canonical(channels, aff)
    assert multi.array.shape == (*SHAPE, 3)
    assert np.array_equal(multi.array[..., 2], canon * 2)


def test_voxel_volume_in_ml():
    stored, aff = store(pattern(), canonical_affine(), *NAMED["LPS (DICOM axial)"])
    assert to_canonical(stored, aff).voxel_volume_ml == pytest.approx(0.5 * 0.5 * 3.0 / 1000.0)


def test_bad_inputs_are_refused():
    with pytest.raises(LggsegError, match="singular"):
        to_canonical(np.zeros((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(LggsegError, match="3D volume"):
        to_canonical(np.zeros((4, 4)), np.eye(4))
    ref = to_canonical(np.zeros((4, 5, 6)), np.eye(4))
    with pytest.raises(LggsegError, match="does not match"):
        from_canonical(np.zeros((4, 5, 6)), ref)


def test_nifti_file_round_trip_keeps_the_input_grid(tmp_path):
    import nibabel as nib

    canon = pattern().astype(np.int16)
    stored, aff = store(canon, canonical_affine(), *NAMED["sagittal-major ASR"])
    aff = rotation(0, 5.0) @ aff
    nib.save(nib.Nifti1Image(stored, aff), tmp_path / "scan.nii.gz")
    image = nib.load(tmp_path / "scan.nii.gz")
    result = to_canonical(np.asarray(image.dataobj), image.affine)
    assert np.array_equal(result.array, canon)
    mask = (result.array % 7 == 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(from_canonical(mask, result), image.affine, image.header), tmp_path / "mask.nii.gz")
    back = nib.load(tmp_path / "mask.nii.gz")
    assert back.shape == stored.shape and np.allclose(back.affine, image.affine)
    assert np.array_equal(np.asarray(back.dataobj) != 0, stored % 7 == 0)
