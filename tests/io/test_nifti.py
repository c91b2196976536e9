import nibabel as nib
import numpy as np
import pytest

from lggseg.errors import LggsegError
from lggseg.io.nifti import from_nifti_axes, load_volume, save_volume, to_nifti_axes


def test_axes_round_trip():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(from_nifti_axes(to_nifti_axes(volume)), volume)
    assert to_nifti_axes(volume).shape == (4, 3, 2)


def test_save_and_load_volume(tmp_path):
    volume = np.zeros((5, 16, 16), np.uint8)
    volume[2, 4:8, 4:8] = 200
    save_volume(volume, tmp_path / "v.nii.gz")
    images, reference = load_volume(tmp_path / "v.nii.gz")
    assert images.shape == (5, 16, 16, 3)
    assert images[2, 5, 5, 1] == 255 and images[0, 0, 0, 0] == 0
    assert np.allclose(reference.affine, np.eye(4))


def test_mask_reuses_reference_affine(tmp_path):
    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 4).astype(np.float32), affine), tmp_path / "in.nii.gz")
    _, reference = load_volume(tmp_path / "in.nii.gz")
    save_volume(np.zeros((4, 16, 16), np.uint8), tmp_path / "mask.nii.gz", reference)
    assert np.allclose(nib.load(tmp_path / "mask.nii.gz").affine, affine)


def test_bad_nifti_is_user_error(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(LggsegError, match="cannot read NIfTI"):
        load_volume(tmp_path / "bad.nii.gz")
