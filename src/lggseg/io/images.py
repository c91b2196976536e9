"""Reading single MRI slices and masks from TIFF, PNG and JPEG files.

Files are recognised by their content (magic bytes), not by their name. Every image comes out
as an ``(H, W, 3)`` uint8 array in the data set's channel order (pre-contrast, FLAIR,
post-contrast), whatever the file held. The conversions, in the order they are applied:

* **Size guard.** The declared width x height is checked *before* any pixel is decoded; images
  with more than :data:`MAX_PIXELS` pixels (or TIFFs with an absurd number of samples per pixel,
  or more than :data:`MAX_TIFF_PAGES` pages) are refused, and so is any image whose decoding
  would take more memory than :data:`lggseg.io.budget.MAX_DECODED_BYTES`, counted in bytes
  (pixels x samples x bytes per sample, plus the decoder's copies and the uint8 result), not
  pixels: a 2 MB tiled float64 TIFF of 8192 x 8192 x 4 costs nothing. A small file that declares
  huge dimensions (a decompression bomb) is refused before any allocation.
* **JPEG completeness and TIFF strips** (:mod:`lggseg.io.decode_guards`). A JPEG whose header
  declares more pixels than its data encodes (libjpeg fills the rest with grey and only warns) is
  refused. A deflate or LZMA TIFF strip or tile that would inflate beyond the size its
  dimensions give (a 500 KB file of a 64 x 64 image inflating to 512 MB) is refused before
  tifffile inflates it.
* **TIFF.** Grayscale (min-is-black) and RGB pages of any bit depth, sample format and
  planar layout are decoded with tifffile. Palette, CMYK, YCbCr, CIELAB and min-is-white pages,
  and compressions tifffile cannot decode without extra codecs (LZW, JPEG-in-TIFF...), are
  decoded with Pillow instead, which applies the palette / colour conversion to RGB (and the
  inversion of min-is-white; 1-bit min-is-white pages, which is how tifffile writes bool
  masks, are read as stored: a set bit is foreground). A TIFF holding several full-resolution pages (a stack), or
  volumetric pages, is refused: one file is one slice (convert volumes to NIfTI).
* **PNG / JPEG** are decoded with Pillow. Palette (``P``/``PA``), bilevel (``1``), ``LA``,
  CMYK, YCbCr, LAB and HSV images are converted to RGB (or RGBA when they carry alpha or a
  transparent palette entry); 16-bit (``I;16``), 32-bit integer (``I``) and float (``F``)
  grayscale keep their values for the rescaling below.
* **Channels.** 1 channel = grayscale, taken as FLAIR and repeated to 3 channels; 2 channels =
  gray + alpha (alpha dropped, then as grayscale); 3 channels = as stored; 4 or more channels =
  the first 3 are kept (RGBA drops alpha).
* **Bit depth.** uint8 passes through unchanged. bool becomes {0, 255}. Every other numeric type
  (uint16, int16, uint32, float16/32/64...) is rescaled linearly from the image's own finite
  min..max to 0..255 (NaN and infinities are treated as the minimum; a constant image becomes
  all zeros). Complex or non-numeric pixels are refused.

Masks come out as ``(H, W)`` bool; files may hold {0, 255} or {0, 1} (bool / 1-bit is accepted
too); a colour mask must have equal channels. Every problem raises :class:`LggsegError` with a
message that names the file; no other exception escapes for any content of the file.

Formats that are refused with a clear message: empty files, DICOM (convert the series to
NIfTI, e.g. with dcm2niix), and anything that is not TIFF, PNG or JPEG (BMP, GIF, WebP, text...).
Paths are read only if they are regular files (:func:`lggseg.io.budget.read_regular`): a FIFO or
``/dev/zero`` is refused at once.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from lggseg.errors import LggsegError
from lggseg.io.budget import check_decoded_bytes, read_regular
from lggseg.io.decode_guards import check_jpeg_complete, check_tiff_segments, pillow_decoded_bytes

MAX_PIXELS = 8192 * 8192
"""Images with more pixels than this are refused (decompression-bomb guard)."""

MAX_SAMPLES_PER_PIXEL = 16
"""TIFF pages with more samples (channels) per pixel than this are refused."""

MAX_TIFF_PAGES = 64
"""TIFFs with more pages (IFDs) than this are refused before the pages are parsed."""

MAX_IMAGE_FILE_BYTES = 256 << 20
"""Image files larger than this are refused before they are read (256 MiB)."""

_BLOCK_VALUES = 1 << 22
"""Values converted to uint8 at a time (bounds the float64 working copy to 32 MB)."""

_MAGIC = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",
    b"MM\x00+": "tiff",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
}

# Pillow modes that are converted to RGB(A) before the array is taken; the others
# (L, RGB, RGBA, I;16*, I, F) keep their values.
_PILLOW_CONVERT = {"P", "PA", "1", "LA", "La", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"}


def sniff_format(data: bytes) -> str | None:
    """Return ``"tiff"``, ``"png"`` or ``"jpeg"`` from the first bytes, or None."""
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def display_path(path: str | Path) -> str:
    """A path for a one-line message: control characters (a newline in a file name) escaped."""
    text = str(path)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_size(width: int, height: int, label: str) -> None:
    if width <= 0 or height <= 0:
        raise LggsegError(f"{label}: image declares an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise LggsegError(f"{label}: image of {width}x{height} pixels is too large (limit {MAX_PIXELS} pixels)")


def _decode_pillow(data: bytes, label: str) -> np.ndarray:
    from PIL import Image

    try:
        img: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise LggsegError(
            f"{label}: image is too large (declared dimensions exceed the decompression-bomb limit)"
        ) from None
    except Image.UnidentifiedImageError:
        raise LggsegError(f"{label}: cannot decode image (corrupt or unsupported image data)") from None
    with img:
        _check_size(img.width, img.height, label)
        converting = img.mode in _PILLOW_CONVERT or (img.mode == "P" and "transparency" in img.info)
        check_decoded_bytes(
            pillow_decoded_bytes(img, converting), f"{label}: {img.width}x{img.height} {img.mode} image"
        )
        if img.format in ("JPEG", "MPO"):
            check_jpeg_complete(data, label)
        if converting:
            has_alpha = "A" in img.mode or "a" in img.mode or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(img)


def _decode_tiff(data: bytes, label: str) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        if len(pages) == 0:
            raise LggsegError(f"{label}: TIFF holds no image")
        if len(pages) > MAX_TIFF_PAGES:
            raise LggsegError(f"{label}: TIFF holds {len(pages)} pages; one file must hold one slice")
        page = pages[0]
        _check_size(int(page.imagewidth), int(page.imagelength), label)
        values = math.prod(int(n) for n in page.shape)
        itemsize = page.dtype.itemsize if page.dtype is not None else 8
        check_decoded_bytes(
            values * itemsize + int(page.imagewidth) * int(page.imagelength) * 3,
            f"{label}: {page.imagewidth}x{page.imagelength} TIFF of {values} {page.dtype or 'unknown'} values",
        )
        if int(page.imagedepth) > 1:
            raise LggsegError(
                f"{label}: volumetric TIFF page (depth {page.imagedepth}); one file must hold one slice (use NIfTI for "
                "volumes)"
            )
        samples = int(page.samplesperpixel)
        if not 1 <= samples <= MAX_SAMPLES_PER_PIXEL:
            raise LggsegError(f"{label}: TIFF with {samples} samples per pixel is not supported")
        full_res = 1 if len(pages) == 1 else sum(1 for p in pages if not (int(getattr(p, "subfiletype", 0) or 0) & 1))
        if full_res > 1:
            raise LggsegError(
                f"{label}: TIFF holds {full_res} images (a stack); one file must hold one slice (split it, or convert "
                "the volume to NIfTI)"
            )
        photometric = int(page.photometric) if page.photometric is not None else -1
        native = photometric in (int(tifffile.PHOTOMETRIC.MINISBLACK), int(tifffile.PHOTOMETRIC.RGB))
        if photometric == int(tifffile.PHOTOMETRIC.MINISWHITE) and int(page.bitspersample) == 1:
            native = True  # bilevel: a set bit is foreground (tifffile writes bool masks this way)
        first_error: Exception | None = None
        if native and not check_tiff_segments(tif, page, label):  # False: leave this compression to Pillow
            native = False
        if native:
            try:
                array = page.asarray()
                shape = (page.imagelength, page.imagewidth)
                if samples > 1 and int(page.planarconfig) == int(tifffile.PLANARCONFIG.SEPARATE):
                    return np.moveaxis(array.reshape((samples, *shape)), 0, -1)
                return array.reshape((*shape, samples)) if samples > 1 else array.reshape(shape)
            except LggsegError:
                raise
            except Exception as exc:  # missing codec, corrupt strips... Pillow may still manage
                first_error = exc
    try:
        return _decode_pillow(data, label)
    except LggsegError:
        raise
    except Exception as exc:
        raise first_error or exc from None


def _decode(data: bytes, label: str) -> np.ndarray:
    """Decode image bytes to an ``(H, W)`` or ``(H, W, C)`` array as stored (any dtype)."""
    if not data:
        raise LggsegError(f"{label}: empty file")
    kind = sniff_format(data[:8])
    if kind is None:
        if data[128:132] == b"DICM":
            raise LggsegError(
                f"{label}: a DICOM file; convert the series to NIfTI (e.g. with dcm2niix) and pass the .nii.gz"
            )
        raise LggsegError(f"{label}: not a TIFF, PNG or JPEG image")
    try:
        array = _decode_tiff(data, label) if kind == "tiff" else _decode_pillow(data, label)
    except LggsegError:
        raise
    except Exception as exc:  # decoders raise many types for truncated/corrupt data
        raise LggsegError(f"{label}: cannot decode image ({_reason(exc)})") from None
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if (
        array.ndim not in (2, 3)
        or array.shape[0] == 0
        or array.shape[1] == 0
        or (array.ndim == 3 and array.shape[2] == 0)
    ):
        raise LggsegError(f"{label}: unsupported image shape {tuple(array.shape)}")
    if array.dtype != bool and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise LggsegError(f"{label}: unsupported pixel type {array.dtype}")
    return array


def _finite_range(array: np.ndarray, rows: int) -> tuple[float, float] | None:
    """(min, max) of the finite values, ``rows`` rows at a time; None when there is none."""
    if array.dtype.kind in "iu":
        return (float(array.min()), float(array.max())) if array.size else None
    lo, hi = math.inf, -math.inf
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows]
        finite = block[np.isfinite(block)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return None if lo > hi else (lo, hi)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Rescale any numeric array ``(H, W[, C])`` to uint8 (uint8 passes through unchanged).

    Converted a block of rows at a time, so the float64 working copy stays small whatever the
    image's size (the values are the same as converting the whole array at once).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    rows = max(1, _BLOCK_VALUES // max(1, array[:1].size))
    found = _finite_range(array, rows)
    out = np.zeros(array.shape, np.uint8)
    if found is None or found[1] <= found[0]:
        return out
    lo, hi = found
    for start in range(0, array.shape[0], rows):
        values = array[start : start + rows].astype(np.float64)
        values[~np.isfinite(values)] = lo
        # halves keep hi - lo finite even for values near the float64 limits
        values *= 0.5
        values -= lo * 0.5
        values *= 255.0 / (hi * 0.5 - lo * 0.5)
        out[start : start + rows] = np.clip(np.round(values), 0, 255)
    return out


def image_from_bytes(data: bytes, label: str = "image") -> np.ndarray:
    """Decode an MRI slice to ``(H, W, 3)`` uint8 (see module docstring for conversions)."""
    array = _decode(data, label)
    if array.ndim == 3:
        array = array[:, :, 0] if array.shape[2] == 2 else array[:, :, :3]
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def mask_from_bytes(data: bytes, label: str = "mask") -> np.ndarray:
    """Decode a mask to ``(H, W)`` bool. Values must be {0, 255} or {0, 1}."""
    array = _decode(data, label)
    if array.ndim == 3:
        color = array[:, :, :3]
        if color.shape[2] >= 3 and not (
            np.array_equal(color[..., 0], color[..., 1]) and np.array_equal(color[..., 0], color[..., 2])
        ):
            raise LggsegError(f"{label}: mask must be single-channel, got {array.shape[2]} different channels")
        array = array[:, :, 0]
    values = np.unique(array)
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise LggsegError(f"{label}: mask values must be {{0, 255}} or {{0, 1}}, found NaN")
    present = set(values.tolist())
    if not (present <= {0, 255} or present <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:6].tolist())
        raise LggsegError(f"{label}: mask values must be {{0, 255}} or {{0, 1}}, found {shown}")
    return array > 0


def _read(path: Path) -> bytes:
    return read_regular(path, display_path(path), MAX_IMAGE_FILE_BYTES, "an image file")


def read_image(path: str | Path) -> np.ndarray:
    """Read an MRI slice file as ``(H, W, 3)`` uint8."""
    path = Path(path)
    return image_from_bytes(_read(path), display_path(path))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W)`` bool."""
    path = Path(path)
    return mask_from_bytes(_read(path), display_path(path))
