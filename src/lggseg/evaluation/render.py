"""PNG overlays and masks for people, in pure numpy and Pillow (no matplotlib).

Used by ``predict`` (per-slice overlay files), ``serve`` (base64 PNGs in the JSON answer) and the
matplotlib figures of :mod:`lggseg.evaluation.figures`.

Colours are from the Okabe–Ito palette, which stays distinct for the common colour-vision
deficiencies: the prediction is vermillion, the ground truth sky blue, and where both agree (true
positive) yellow. The web page uses the same three colours.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from lggseg.io.atomic import atomic_path

PRED_COLOR = (213, 94, 0)
"""Okabe–Ito vermillion: the prediction (and false positives)."""
TRUTH_COLOR = (86, 180, 233)
"""Okabe–Ito sky blue: the ground truth (and false negatives)."""
AGREE_COLOR = (240, 228, 66)
"""Okabe–Ito yellow: true positives."""
TEXT_COLOR = (255, 255, 255)

_TRAILING_NUMBER = re.compile(r"^(?P<head>.*?)(?P<number>\d+)\Z")


def outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a 2D bool mask ``(H, W)`` -> ``(H, W)`` bool."""
    if not mask.any():
        return mask
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def grey(image: np.ndarray) -> np.ndarray:
    """The FLAIR channel of ``(H, W, 3)`` (or an ``(H, W)`` image) as ``(H, W, 3)`` grey uint8."""
    flair = image[..., 1] if image.ndim == 3 else image
    return np.repeat(flair[..., None], 3, axis=2).copy()


def overlay(image: np.ndarray, pred: np.ndarray | None = None, truth: np.ndarray | None = None) -> np.ndarray:
    """FLAIR as grey with outlines: truth sky blue, prediction vermillion. ``(H, W, 3)`` uint8 -> same."""
    rgb = grey(image)
    if truth is not None:
        rgb[outline(truth)] = TRUTH_COLOR
    if pred is not None:
        rgb[outline(pred)] = PRED_COLOR
    return rgb


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """FLAIR with true positives yellow, false positives vermillion, false negatives sky blue, filled.

    image ``(H, W, 3)`` uint8; pred, truth ``(H, W)`` bool; ``alpha`` the fill's opacity -> ``(H, W, 3)`` uint8.
    """
    rgb = grey(image).astype(np.float32)
    for region, color in ((pred & truth, AGREE_COLOR), (pred & ~truth, PRED_COLOR), (truth & ~pred, TRUTH_COLOR)):
        rgb[region] = (1 - alpha) * rgb[region] + alpha * np.asarray(color, np.float32)
    return np.round(rgb).astype(np.uint8)


def probability_image(prob: np.ndarray) -> np.ndarray:
    """Probabilities ``(H, W)`` in [0, 1] -> ``(H, W)`` uint8, 0..255 (NaN counts as 0)."""
    return np.round(np.clip(np.nan_to_num(prob), 0.0, 1.0) * 255.0).astype(np.uint8)


def annotate(rgb: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Write ``lines`` (text, colour) in the top-left corner on a dark box; ``(H, W, 3)`` -> a copy.

    Images narrower than 128 pixels are returned unlabelled (a label would hide them).
    """
    if rgb.shape[1] < 128 or not lines:
        return rgb.copy()
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(rgb)
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture, "RGBA")
    boxes = [draw.textbbox((0, 0), text, font=font) for text, _ in lines]
    height = max(box[3] - box[1] for box in boxes) + 3
    width = min(rgb.shape[1] - 2, max(box[2] for box in boxes) + 8)
    draw.rectangle((0, 0, width, height * len(lines) + 4), fill=(0, 0, 0, 170))
    for row, ((text, color), box) in enumerate(zip(lines, boxes)):
        draw.text((4, 2 + row * height - box[1]), text, fill=color, font=font)
    return np.asarray(picture).copy()


def labelled_overlay(
    image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, title: str | None = None
) -> np.ndarray:
    """:func:`overlay` with a label naming each outline and its area (and ``title`` above them).

    image ``(H, W, 3)`` uint8, pred and truth ``(H, W)`` bool -> ``(H, W, 3)`` uint8.
    """
    lines: list[tuple[str, tuple[int, int, int]]] = [(title, TEXT_COLOR)] if title else []
    lines.append((f"prediction {int(pred.sum())} px", PRED_COLOR))
    if truth is not None:
        lines.append((f"ground truth {int(truth.sum())} px", TRUTH_COLOR))
    return annotate(overlay(image, pred, truth), lines)


def padded_names(names: Sequence[str]) -> list[str]:
    """Zero-pad the trailing slice numbers so that names sort in slice order.

    ``["P_1", "P_10", "P_2"]`` -> ``["P_01", "P_10", "P_02"]``; names without a trailing number
    are unchanged.
    """
    matches = [_TRAILING_NUMBER.match(name) for name in names]
    width = max((len(m["number"]) for m in matches if m), default=0)
    return [f"{m['head']}{m['number'].zfill(width)}" if m else name for name, m in zip(names, matches)]


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
