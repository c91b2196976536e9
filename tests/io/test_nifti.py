import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from lggseg.errors import LggsegError
from lggseg.io.nifti import (
    from_nifti_axes,
    load_volume,
    open_image,
    read_scan,
    save_volume,
    to_nifti_axes,
    to_uint8,
)
from lggseg.io.orientation import to_canonical


def test_axes_round_trip():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(from_nifti_axes(to_nifti_axes(volume)), volume)
    assert to_nifti_axes(volume).shape == (4, 3, 2)


def test_a_slice_stack_is_written_las_and_reads_back_through_its_affine(tmp_path):
    """The old writer stored this layout with the identity affine: every viewer flipped it left-right."""
    volume = np.random.default_rng(0).integers(0, 255, (5, 16, 12), dtype=np.uint8)
    save_volume(volume, tmp_path / "v.nii.gz", spacing_mm=(3.0, 0.9, 0.8))
    image = nib.load(tmp_path / "v.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    assert np.allclose(image.affine, np.diag([-0.8, 0.9, 3.0, 1.0]))
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    assert np.array_equal(np.asarray(image.dataobj), to_nifti_axes(volume))  # the layout is unchanged
    canonical = to_canonical(np.asarray(image.dataobj), image.affine)
    assert np.array_equal(canonical.array, volume) and canonical.spacing_mm == pytest.approx((3.0, 0.9, 0.8))
    images, _ = load_volume(tmp_path / "v.nii.gz")
    assert images.shape == (5, 16, 12, 3) and np.array_equal(images[..., 1], volume)  # uint8 values kept


def test_mask_goes_back_onto_the_input_grid(tmp_path):
    rng = np.random.default_rng(1)
    stored = rng.random((16, 6, 20)).astype(np.float32) * 900  # an RAS-permuted scan: (R, S, A)
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2], affine[3, 3] = 0.9, 5.0, 0.7, 1.0
    affine[:3, 3] = [-7, 3, 11]
    nib.save(nib.Nifti1Image(stored, affine), tmp_path / "in.nii.gz")
    images, reference = load_volume(tmp_path / "in.nii.gz")
    assert images.shape == (6, 20, 16, 3)  # canonical (S, P, L)
    mask = np.zeros(images.shape[:3], np.uint8)
    mask[2, 3, 4] = 1  # canonical: slice 2 (S), row 3 (from anterior), column 4 (from the right)
    save_volume(mask, tmp_path / "mask.nii.gz", reference)
    back = nib.load(tmp_path / "mask.nii.gz")
    assert back.shape == stored.shape and np.allclose(back.affine, affine)
    assert back.get_data_dtype() == np.uint8 and float(back.header["cal_max"]) == 1.0
    ((i, j, k),) = np.argwhere(np.asarray(back.dataobj))
    assert (i, j, k) == (16 - 1 - 4, 2, 20 - 1 - 3)  # i runs toward R (columns run toward L), j = S, k toward A


def test_reference_without_the_canonical_volume_still_works(tmp_path):
    """The server keeps only the affine and header; the orientation is recomputed from the affine."""
    from types import SimpleNamespace

    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS
    nib.save(nib.Nifti1Image(np.ones((12, 10, 4), np.int16), affine), tmp_path / "in.nii.gz")
    images, reference = load_volume(tmp_path / "in.nii.gz")
    keep = SimpleNamespace(affine=np.array(reference.affine), header=reference.header.copy())
    save_volume(np.ones(images.shape[:3], np.uint8), tmp_path / "m.nii.gz", keep)
    assert nib.load(tmp_path / "m.nii.gz").shape == (12, 10, 4)


def test_to_uint8_keeps_8_bit_values_and_rescales_the_rest():
    small = np.array([[0, 17, 255]], dtype=np.int16)
    assert np.array_equal(to_uint8(small), [[0, 17, 255]])
    wide = np.concatenate([np.zeros(10), np.linspace(1, 1000, 1000), [5000.0]]).astype(np.float32)
    scaled = to_uint8(wide)
    assert scaled[0] == 0 and scaled[-1] == 255 and scaled[-2] == 255  # the outlier saturates
    assert 120 < scaled[10 + 499] < 135  # linear from 0 to the 99.9th percentile
    assert np.array_equal(to_uint8(np.array([np.nan, np.inf, 2.5])), [0, 0, 255])


def test_a_header_that_claims_2048_cubed_is_refused_before_any_voxel(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.int16)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4)
    assert path.stat().st_size < 200
    with pytest.raises(LggsegError, match=r"bomb.nii.gz: volume of shape \(2048, 2048, 2048\): decoding it would need"):
        open_image(path)


def test_non_regular_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.nii")
    for path in (tmp_path / "fifo.nii", "/dev/zero"):
        with pytest.raises(LggsegError, match="not a regular file"):
            read_scan(path)
    with pytest.raises(LggsegError, match="no such NIfTI file"):
        read_scan(tmp_path / "absent.nii.gz")


def test_nan_sform_falls_back_to_the_qform(tmp_path):
    affine = np.diag([-1.0, 1.0, 3.0, 1.0])
    image = nib.Nifti1Image(np.ones((8, 8, 3), np.int16), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, tmp_path / "nan.nii")
    raw = bytearray((tmp_path / "nan.nii").read_bytes())
    raw[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]: what nibabel refuses to write
    (tmp_path / "nan.nii").write_bytes(bytes(raw))
    scan = read_scan(tmp_path / "nan.nii")
    assert np.allclose(scan.affine, affine)
    assert scan.notes == ("the sform is unusable; used the qform",)


def test_no_orientation_in_the_header_is_read_as_analyze_las(tmp_path):
    image = nib.Nifti1Image(np.ones((8, 8, 3), np.int16), None)
    image.header.set_zooms((0.5, 0.5, 4.0))
    nib.save(image, tmp_path / "plain.nii")
    scan = read_scan(tmp_path / "plain.nii")
    assert nib.aff2axcodes(scan.affine) == ("L", "A", "S") and "no orientation" in scan.notes[0]


@pytest.mark.parametrize(
    "shape, message", [((8, 8, 4, 2), "2 channels in the 4th axis"), ((8, 8), "expected a 3D volume")]
)
def test_wrong_dimensions_are_refused(tmp_path, shape, message):
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), np.eye(4)), tmp_path / "x.nii.gz")
    with pytest.raises(LggsegError, match=message):
        read_scan(tmp_path / "x.nii.gz")


def test_bad_nifti_is_user_error(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(LggsegError, match="cannot read NIfTI"):
        load_volume(tmp_path / "bad.nii.gz")
