"""Checks made before an image is decoded, so that a small hostile file cannot cost memory or time.

* :func:`pillow_decoded_bytes`: what decoding a Pillow image to an array will take, for
  :func:`lggseg.io.budget.check_decoded_bytes`.
* :func:`check_jpeg_complete`: a JPEG whose header declares more pixels than its data encodes is
  refused (libjpeg fills the missing part with grey and only warns, so the image would be
  segmented as garbage). With restart markers, the markers are counted against the declared
  size; otherwise the data is decoded again, at half size, with junk bytes after each scan: the
  result changes only if the decoder was still waiting for data when a scan ended.
* :func:`check_tiff_segments`: every deflate- or LZMA-compressed strip or tile of a TIFF page is
  inflated, as a stream, up to one byte beyond the size its dimensions give; a strip that would
  inflate further (a 500 KB strip of a 64 x 64 image inflating to 512 MB) is refused. tifffile
  itself inflates a whole strip before it looks at its size.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import Any

import numpy as np

from lggseg.errors import LggsegError

DEFLATE = (8, 32946, 50013)
LZMA = (34925,)
BOUNDED = (1, 32773)
"""TIFF compressions whose output tifffile bounds by itself: none, PackBits (at most 64 x)."""


def pillow_decoded_bytes(img: Any, converting: bool) -> int:
    """Memory to decode a Pillow image to an array: its own buffer, the array copy, a converted copy."""
    per_pixel = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
    return img.width * img.height * (2 * per_pixel + (4 if converting else 0) + 3)


def _jpeg_restart_problem(data: bytes) -> tuple[str | None, list[int]]:
    """Walk a JPEG's markers: (why its restart markers are too few for its size, or None; where each scan ends)."""
    pos, width, height, restart = 2, 0, 0, 0
    ends: list[int] = []
    sampling: dict[int, tuple[int, int]] = {}
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None, ends
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3) and len(body) >= 6:
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            for i in range(min(body[5], (len(body) - 6) // 3)):
                sampling[body[6 + 3 * i]] = (max(body[7 + 3 * i] >> 4, 1), max(body[7 + 3 * i] & 15, 1))
        elif marker == 0xDD and len(body) >= 2:
            restart = int.from_bytes(body[:2], "big")
        pos += 2 + length
        if marker != 0xDA:
            continue
        ids = [body[1 + 2 * i] for i in range(min(body[0] if body else 0, (len(body) - 1) // 2))]
        markers = 0
        while pos + 1 < len(data) and not (
            data[pos] == 0xFF and data[pos + 1] not in range(0xD0, 0xD8) and data[pos + 1]
        ):
            markers += data[pos] == 0xFF and 0xD0 <= data[pos + 1] <= 0xD7
            pos += 1
        ends.append(pos)
        if restart and sampling and width and height and all(i in sampling for i in ids):
            hmax, vmax = max(h for h, _ in sampling.values()), max(v for _, v in sampling.values())
            if len(ids) == 1:  # non-interleaved: one block per MCU
                h, v = sampling[ids[0]]
                units = math.ceil(math.ceil(width * h / hmax) / 8) * math.ceil(math.ceil(height * v / vmax) / 8)
            else:
                units = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
            if markers + 1 < math.ceil(units / restart):
                return f"its data holds {markers + 1} of the {math.ceil(units / restart)} restart intervals", ends
    return None, ends


def check_jpeg_complete(data: bytes, label: str) -> None:
    """Refuse a JPEG whose header declares more pixels than its data holds (see the module docstring)."""
    from PIL import Image

    problem, ends = _jpeg_restart_problem(data)
    if problem is None and ends:
        junk, cuts = bytes(range(1, 255)), [0, *ends, len(data)]
        padded = junk.join(data[a:b] for a, b in zip(cuts, cuts[1:]))  # junk after each scan's data

        def half(blob: bytes) -> np.ndarray:
            with Image.open(io.BytesIO(blob)) as img:
                img.draft(img.mode, (max(1, img.width // 2), max(1, img.height // 2)))
                return np.asarray(img)

        try:
            same = np.array_equal(half(data), half(padded))
        except Exception:  # the decoder choked on the junk: it was still reading data
            same = False
        if not same:
            problem = "its data ends before the declared size is filled"
    if problem is not None:
        raise LggsegError(f"{label}: truncated or inconsistent JPEG: {problem}")


def check_tiff_segments(tif: Any, page: Any, label: str) -> bool:
    """Check that no strip or tile of ``page`` inflates beyond its declared size (raises LggsegError).

    Returns False for a compression whose output cannot be bounded here (tifffile would inflate it
    whole): such pages are left to Pillow, whose libtiff decodes into a buffer of the declared size.
    """
    compression = int(page.compression)
    if compression in BOUNDED:
        return True
    if compression not in DEFLATE + LZMA:
        return False
    itemsize = page.dtype.itemsize if page.dtype is not None else 8
    expected = math.prod(int(n) for n in page.chunks) * max(itemsize, 1)
    handle = tif.filehandle
    for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
        if not count:
            continue
        handle.seek(int(offset))
        data = handle.read(int(count))
        inflater: Any = zlib.decompressobj() if compression in DEFLATE else _lzma_decompressor()
        try:
            out = inflater.decompress(data, expected + 1)
        except Exception:  # corrupt data: the decoder will say so
            continue
        pending = getattr(inflater, "unconsumed_tail", b"") or not getattr(inflater, "needs_input", True)
        if len(out) > expected or (pending and not getattr(inflater, "eof", False)):
            raise LggsegError(
                f"{label}: TIFF strip or tile {index} inflates beyond its declared {expected} bytes "
                "(decompression bomb); refused"
            )
    return True


def _lzma_decompressor() -> Any:
    import lzma

    return lzma.LZMADecompressor()
