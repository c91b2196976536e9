"""Hostile image files: byte bombs, lying JPEG headers, non-regular paths (issue 12).

Every decoder counts the bytes a header asks for before it allocates; a JPEG that declares more
pixels than its data holds is refused instead of being segmented as grey; a FIFO or a device is
refused without being read.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import tracemalloc
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from lggseg.errors import LggsegError
from lggseg.io import images
from lggseg.io.images import image_from_bytes, read_image, read_mask


def _finishes(work: Callable[[], object], seconds: float = 10.0) -> BaseException | None:
    """Run ``work`` in a thread; fail the test if it blocks; return what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading blocked"
    return raised[0] if raised else None


# ------------------------------------------------------------------------------------ byte bombs


@pytest.fixture(scope="module")
def float64_tiff_bomb() -> bytes:
    """A ~2 MB tiled, deflated TIFF of 8192 x 8192 x 4 float64 zeros (2 GiB once decoded)."""
    tile = zlib.compress(np.zeros((256, 256, 4), np.float64).tobytes(), 9)  # 1024 copies of one deflated tile
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        (tile for _ in range(32 * 32)),
        shape=(8192, 8192, 4),
        dtype=np.float64,
        tile=(256, 256),
        compression="zlib",
        photometric="rgb",
        extrasamples=[0],
    )
    return buffer.getvalue()


def test_a_small_float64_tiff_bomb_is_refused_by_bytes_before_decoding(float64_tiff_bomb: bytes) -> None:
    assert len(float64_tiff_bomb) < 3 << 20
    assert 8192 * 8192 <= images.MAX_PIXELS  # the pixel guard alone lets it through
    tracemalloc.start()
    try:
        with pytest.raises(LggsegError, match=r"bomb\.tif: 8192x8192 TIFF .* float64 .* need 2240 MiB"):
            image_from_bytes(float64_tiff_bomb, "bomb.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # nothing near the 2 GiB the header asks for


def _strip_bomb(compression: str) -> bytes:
    """A 64 x 64 uint8 TIFF whose single strip inflates to 128 MB (130 KB of deflate, 20 KB of LZMA)."""
    if compression == "zlib":
        packer: Any = zlib.compressobj(9)
    else:
        import lzma

        packer = lzma.LZMACompressor(preset=0)
    zeros = b"\0" * (1 << 24)
    strip = b"".join(packer.compress(zeros) for _ in range(8)) + packer.flush()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, iter([strip]), shape=(64, 64), dtype=np.uint8, compression=compression, rowsperstrip=64)
    return buffer.getvalue()


@pytest.mark.parametrize("compression", ["zlib", "lzma"])
def test_a_tiff_strip_that_inflates_beyond_its_size_is_refused_before_inflating(compression: str) -> None:
    bomb = _strip_bomb(compression)
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(
            LggsegError, match=r"strip.tif: TIFF strip or tile 0 inflates beyond its declared 4096 bytes"
        ):
            image_from_bytes(bomb, "strip.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # it used to inflate all 128 MB first
    honest = io.BytesIO()
    tifffile.imwrite(honest, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), compression=compression)
    assert image_from_bytes(honest.getvalue()).shape == (64, 64, 3)


def test_too_many_tiff_pages_are_refused_before_parsing_them() -> None:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for _ in range(images.MAX_TIFF_PAGES + 1):
            writer.write(np.zeros((2, 2), np.uint8), contiguous=False)
    with pytest.raises(LggsegError, match=f"{images.MAX_TIFF_PAGES + 1} pages"):
        image_from_bytes(buffer.getvalue(), "pages.tif")


def _reference_to_uint8(array: np.ndarray) -> np.ndarray:
    """The conversion before it was done in blocks (whole-array float64 copy)."""
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    values[~finite] = lo
    values *= 0.5
    values -= lo * 0.5
    values *= 255.0 / (hi * 0.5 - lo * 0.5)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int16, np.uint16, np.int32])
def test_block_conversion_equals_the_whole_array_conversion(dtype: type, rng: np.random.Generator) -> None:
    rows = images._BLOCK_VALUES // (700 * 3) * 2 + 13  # several blocks and a ragged last one
    if np.issubdtype(dtype, np.floating):
        array = (rng.standard_normal((rows, 700, 3)) * 1000).astype(dtype)
        array[5, 5, 0], array[rows - 1, 3, 2], array[rows // 2, 1, 1] = np.nan, np.inf, -np.inf
    else:
        info = np.iinfo(dtype)
        array = rng.integers(max(info.min, -30000), min(info.max, 60000), (rows, 700, 3)).astype(dtype)
    out = images._to_uint8(array)
    assert out.dtype == np.uint8 and np.array_equal(out, _reference_to_uint8(array))
    only_nan = np.full((3, 4), np.nan, np.float32)
    assert not images._to_uint8(only_nan).any() and not images._to_uint8(np.full((3, 4), 7, np.int16)).any()


# ------------------------------------------------------------------------------------ lying JPEGs


def _jpeg(mode: str, **options: object) -> bytes:
    rng = np.random.default_rng(1)
    pixels = (rng.random((300, 200, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _lie(data: bytes, height: int, width: int) -> bytes:
    start = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    out = bytearray(data)
    out[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(out)


KINDS = {
    "baseline": {},
    "progressive": {"progressive": True},
    "restart-blocks": {"restart_marker_blocks": 1},
    "restart-rows": {"restart_marker_rows": 1},
    "subsampled": {"subsampling": 2, "restart_marker_blocks": 7},
}


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_is_refused(kind: str, mode: str) -> None:
    honest = _jpeg(mode, **KINDS[kind])
    decoded = image_from_bytes(honest, "honest.jpg")
    assert decoded.shape == (300, 200, 3)
    plain = np.asarray(Image.open(io.BytesIO(honest)).convert("RGB" if mode != "L" else "L"))
    assert np.array_equal(decoded[..., 1], plain if mode == "L" else plain[..., 1])
    for height, width in [(400, 200), (300, 264), (2048, 2048)]:
        with pytest.raises(LggsegError, match="liar.jpg: truncated or inconsistent JPEG"):
            image_from_bytes(_lie(honest, height, width), "liar.jpg")


def test_flat_and_tiny_jpegs_are_not_mistaken_for_liars() -> None:
    for size, value in [((1, 1), 0), ((7, 9), 200), ((2048, 64), 0), ((640, 480), 30)]:
        buffer = io.BytesIO()
        Image.new("L", size, value).save(buffer, format="JPEG", optimize=True)
        assert image_from_bytes(buffer.getvalue()).shape == (size[1], size[0], 3)


# ------------------------------------------------------------------------------------ non-regular paths


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_a_fifo_is_refused_at_once_without_reading(tmp_path: Path, reader: Callable[[Path], object]) -> None:
    fifo = tmp_path / "slice.png"
    os.mkfifo(fifo)
    raised = _finishes(lambda: reader(fifo))
    assert isinstance(raised, LggsegError) and "not a regular file" in str(raised) and str(fifo) in str(raised)


def test_dev_zero_is_refused_at_once() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    raised = _finishes(lambda: read_image("/dev/zero"))
    assert (
        isinstance(raised, LggsegError)
        and str(raised) == "/dev/zero: not a regular file (a device, FIFO or socket); refused"
    )


def test_an_oversized_image_file_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(images.MAX_IMAGE_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(LggsegError, match=r"big\.png: \d+ MiB, larger than the 256 MiB limit"):
        read_image(big)
