"""Reading single MRI slices and masks from TIFF, PNG and JPEG files.

Every image comes out as an ``(H, W, 3)`` uint8 array in the data set's channel order
(pre-contrast, FLAIR, post-contrast), whatever the file held:

* 16-bit and float images are rescaled linearly from their own min..max to 0..255;
* grayscale images are taken as FLAIR and repeated to 3 channels;
* RGBA drops alpha; palette and other Pillow modes are converted to RGB.

Masks come out as ``(H, W)`` bool; files may hold {0, 255} or {0, 1}. Files are recognised by
their content (magic bytes), not by their name. Every problem raises :class:`LggsegError` with
a message that names the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lggseg.errors import LggsegError

MAX_PIXELS = 8192 * 8192
"""Images with more pixels than this are refused (decompression-bomb guard)."""

_MAGIC = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",
    b"MM\x00+": "tiff",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
}


def sniff_format(data: bytes) -> str | None:
    """Return ``"tiff"``, ``"png"`` or ``"jpeg"`` from the first bytes, or None."""
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def _decode(data: bytes, label: str) -> np.ndarray:
    """Decode image bytes to an array as stored (any dtype, 2 or 3 dims)."""
    if not data:
        raise LggsegError(f"{label}: empty file")
    kind = sniff_format(data[:8])
    if kind is None:
        raise LggsegError(f"{label}: not a TIFF, PNG or JPEG image")
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages[0]
                if int(np.prod(page.shape[:2])) > MAX_PIXELS:
                    raise LggsegError(f"{label}: image of {page.shape[1]}x{page.shape[0]} pixels is too large")
                array = page.asarray()
        else:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise LggsegError(f"{label}: image of {img.width}x{img.height} pixels is too large")
                if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "LA"):
                    img = img.convert("RGBA" if "A" in img.mode else "RGB")
                array = np.asarray(img)
    except LggsegError:
        raise
    except Exception as exc:  # decoders raise many types for truncated/corrupt data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{label}: cannot decode image ({reason})") from None
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF (C, H, W)
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise LggsegError(f"{label}: unsupported image shape {tuple(array.shape)}")
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Rescale any numeric array to uint8 (uint8 passes through unchanged)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, lo)
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    return np.round((values - lo) / (hi - lo) * 255.0).astype(np.uint8)


def image_from_bytes(data: bytes, label: str = "image") -> np.ndarray:
    """Decode an MRI slice to ``(H, W, 3)`` uint8 (see module docstring for conversions)."""
    array = _decode(data, label)
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels == 2:  # gray + alpha
            array = array[:, :, 0]
        elif channels >= 3:
            array = array[:, :, :3]
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def mask_from_bytes(data: bytes, label: str = "mask") -> np.ndarray:
    """Decode a mask to ``(H, W)`` bool. Values must be {0, 255} or {0, 1}."""
    array = _decode(data, label)
    if array.ndim == 3:
        if array.shape[2] >= 3 and not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise LggsegError(f"{label}: mask must be single-channel, got {array.shape[2]} different channels")
        array = array[:, :, 0]
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:6].tolist())
        raise LggsegError(f"{label}: mask values must be {{0, 255}} or {{0, 1}}, found {shown}")
    return array > 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LggsegError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LggsegError(f"{path}: is a folder, expected an image file") from None
    except OSError as exc:
        raise LggsegError(f"{path}: cannot read ({exc.strerror})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an MRI slice file as ``(H, W, 3)`` uint8."""
    path = Path(path)
    return image_from_bytes(_read(path), str(path))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W)`` bool."""
    path = Path(path)
    return mask_from_bytes(_read(path), str(path))
