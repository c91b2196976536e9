"""PNG overlays and masks for people, in pure numpy and Pillow (no matplotlib).

Used by ``predict`` (per-slice overlay files), ``serve`` (base64 PNGs in the JSON answer) and the
matplotlib figures of :mod:`lggseg.evaluation.figures`.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from lggseg.io.atomic import atomic_path

TRUTH_COLOR = (0, 255, 0)
PRED_COLOR = (255, 40, 40)


def outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a 2D bool mask."""
    if not mask.any():
        return mask
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, pred: np.ndarray | None = None, truth: np.ndarray | None = None) -> np.ndarray:
    """FLAIR channel as grey with outlines: truth green, prediction red. ``(H, W, 3)`` uint8 -> same."""
    flair = image[..., 1] if image.ndim == 3 else image
    rgb = np.repeat(flair[..., None], 3, axis=2).copy()
    if truth is not None:
        rgb[outline(truth)] = TRUTH_COLOR
    if pred is not None:
        rgb[outline(pred)] = PRED_COLOR
    return rgb


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def png_base64(array: np.ndarray) -> str:
    """:func:`png_bytes` as base64 text (for JSON)."""
    return base64.b64encode(png_bytes(array)).decode("ascii")
