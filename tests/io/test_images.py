import io

import numpy as np
import pytest
from PIL import Image

from lggseg.errors import LggsegError
from lggseg.io.images import image_from_bytes, mask_from_bytes, read_image, read_mask, sniff_format


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_reads_real_slice_and_mask(sample_patient):
    name = sample_patient.name
    image = read_image(sample_patient / f"{name}_10.tif")
    mask = read_mask(sample_patient / f"{name}_10_mask.tif")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert mask.shape == (256, 256) and mask.dtype == bool


def test_format_is_sniffed_by_content_not_name(tmp_path):
    path = tmp_path / "slice.tif"
    path.write_bytes(_png(np.full((8, 8, 3), 7, np.uint8)))
    assert read_image(path)[0, 0].tolist() == [7, 7, 7]
    assert sniff_format(b"hello") is None


def test_grayscale_is_repeated_to_three_channels():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    image = image_from_bytes(_png(gray))
    assert image.shape == (8, 8, 3)
    assert np.array_equal(image[..., 0], gray) and np.array_equal(image[..., 2], gray)


def test_masks_accept_0_1_and_0_255_only():
    assert mask_from_bytes(_png(np.array([[0, 1]], np.uint8))).tolist() == [[False, True]]
    assert mask_from_bytes(_png(np.array([[0, 255]], np.uint8))).tolist() == [[False, True]]
    with pytest.raises(LggsegError, match="mask values"):
        mask_from_bytes(_png(np.array([[0, 128]], np.uint8)), "m.png")


def test_text_file_named_tif_is_rejected(tmp_path):
    path = tmp_path / "x.tif"
    path.write_text("hello")
    with pytest.raises(LggsegError, match="x.tif: not a TIFF, PNG or JPEG image"):
        read_image(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(LggsegError, match="no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(LggsegError, match="empty file"):
        read_image(tmp_path / "empty.png")
