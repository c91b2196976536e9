"""Intensity normalisation per volume, the same for training and inference.

Per channel, over the voxels of one volume that are above 0 (the head): clip to the [0.5, 99.5]
percentiles, then subtract the mean and divide by the standard deviation of the clipped values.
The four numbers per channel are the volume's *stats*, shape ``(4, 3)``: rows ``lo, hi, mean,
std``. A single slice given alone is normalised with its own stats.

A 2.5D model (``context_slices`` = c > 0) sees each slice with its c neighbours on either side:
:func:`context_stack` builds that input, and :func:`tile_stats` repeats the stats to match.

:func:`volume_batches` puts it together: a volume's normalised network input, one batch at a time,
as both inference (:class:`lggseg.infer.segmenter.Segmenter`) and validation during training see it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

PERCENTILES = (0.5, 99.5)


def volume_stats(images: np.ndarray) -> np.ndarray:
    """Per-channel normalisation stats of a volume.

    images: ``(Z, H, W, 3)`` or ``(H, W, 3)`` uint8. Returns ``(4, 3)`` float32 (lo, hi, mean, std).
    """
    flat = images.reshape(-1, images.shape[-1])
    stats = np.zeros((4, flat.shape[1]), np.float32)
    for c in range(flat.shape[1]):
        values = flat[:, c]
        head = values[values > 0]
        if head.size < 64:
            head = values
        lo, hi = np.percentile(head, PERCENTILES)
        clipped = np.clip(head.astype(np.float32), lo, hi)
        std = float(clipped.std())
        stats[:, c] = (lo, hi, float(clipped.mean()), std if std > 1e-3 else 1.0)
    return stats


def normalize(images: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Normalise raw intensities.

    images: ``(B, C, H, W)`` float (0..255). stats: ``(B, 4, C)`` or ``(4, C)``. Returns float32.
    """
    if stats.dim() == 2:
        stats = stats.unsqueeze(0).expand(images.shape[0], -1, -1)
    lo, hi, mean, std = (stats[:, i, :, None, None] for i in range(4))
    return (torch.minimum(torch.maximum(images, lo), hi) - mean) / std


def context_indices(slices: np.ndarray, depth: int | np.ndarray, context: int) -> np.ndarray:
    """Indices of each slice's neighbourhood: ``(n,)`` slice indices of a ``depth``-slice volume ->
    ``(n, 2c + 1)``, from ``z - c`` to ``z + c``, clamped to the volume (an end slice repeats itself).

    ``depth`` is one number, or ``(n, 1)`` when the slices come from volumes of different depths.
    """
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(slices)[:, None] + offsets[None], 0, np.asarray(depth) - 1)


def stack_neighbourhood(gathered: torch.Tensor) -> torch.Tensor:
    """``(n, 2c + 1, H, W, 3)`` slices of each neighbourhood -> ``(n, 3 (2c + 1), H, W)`` float32,
    the channels of slice ``z - c`` first (the channel order of every 2.5D input)."""
    return gathered.permute(0, 1, 4, 2, 3).flatten(1, 2).float()


def context_stack(images: np.ndarray, start: int, stop: int, context: int) -> torch.Tensor:
    """Network input of slices ``start:stop`` of a volume, raw intensities.

    images: ``(Z, H, W, 3)`` uint8. Returns ``(n, 3 (2c + 1), H, W)`` float32, n = the slices of
    ``start:stop`` that exist: the channels of slice ``z - c`` first, then up to ``z + c`` (c = 0:
    the slices themselves).
    """
    stop = min(stop, images.shape[0])
    if context == 0:
        return torch.from_numpy(np.array(images[start:stop])).permute(0, 3, 1, 2).float()  # copy: may be read-only
    near = context_indices(np.arange(start, stop), images.shape[0], context)  # (n, 2c+1)
    return stack_neighbourhood(torch.from_numpy(images[near]))


def tile_stats(stats: torch.Tensor, context: int) -> torch.Tensor:
    """``(..., 4, 3)`` stats -> ``(..., 4, 3 (2c + 1))``, one copy per slice of the neighbourhood."""
    return stats.repeat(*([1] * (stats.dim() - 1)), 2 * context + 1) if context else stats


def volume_batches(
    images: np.ndarray, context: int, batch_size: int, stats: np.ndarray | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """A volume's normalised network input, ``batch_size`` slices at a time.

    images: ``(Z, H, W, 3)`` uint8; context: the model's ``context_slices``; stats: ``(4, 3)``
    (default: the volume's own, :func:`volume_stats`). Yields ``(start, x)`` with ``x`` the input of
    slices ``start:start + n``, ``(n, 3 (2c + 1), H, W)`` float32 (n = ``batch_size``, fewer at the end).
    """
    if stats is None:
        stats = volume_stats(images)
    stats_t = tile_stats(torch.from_numpy(np.asarray(stats, np.float32)), context)
    for start in range(0, images.shape[0], batch_size):
        yield start, normalize(context_stack(images, start, start + batch_size, context), stats_t)
