"""Intensity normalisation per volume, the same for training and inference.

Per channel, over the voxels of one volume that are above 0 (the head): clip to the [0.5, 99.5]
percentiles, then subtract the mean and divide by the standard deviation of the clipped values.
The four numbers per channel are the volume's *stats*, shape ``(4, 3)``: rows ``lo, hi, mean,
std``. A single slice given alone is normalised with its own stats.

A 2.5D model (``context_slices`` = c > 0) sees each slice with its c neighbours on either side:
:func:`context_stack` builds that input, and :func:`tile_stats` repeats the stats to match.

A mirror model (``mirror``) also sees, after those channels, the same channels mirrored left-right
about the head's midline (:func:`volume_midline`, one column per volume): every pixel is shown
next to its contralateral twin, so a bright region that the other hemisphere repeats (both temporal
poles, symmetric cortex) can be told from a one-sided lesion. :func:`mirror_channels` builds it.

:func:`volume_batches` puts it together: a volume's normalised network input, one batch at a time,
as both inference (:class:`lggseg.infer.segmenter.Segmenter`) and validation during training see it.
Since the raw intensities are uint8, it normalises by lookup in a 256-entry table per channel
(:func:`intensity_table`), each slice once, with the same result as :func:`normalize`.
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


HEAD_FRACTION = 0.1
"""FLAIR above this share of the volume's 99.5th percentile counts as head for :func:`volume_midline`."""


def volume_midline(images: np.ndarray) -> float:
    """The head's left-right centre in a volume: the mean column of its head pixels, on the half-pixel grid.

    images: ``(Z, H, W, 3)`` or ``(H, W, 3)`` uint8 (FLAIR is channel 1). Returns a column ``c`` with
    ``2c`` an integer, so that mirroring about it maps pixel centres onto pixel centres; the image's
    centre ``(W - 1) / 2`` when nothing is bright enough to be head.
    """
    flair = images[..., 1].reshape(-1, images.shape[-3], images.shape[-2])  # (Z, H, W)
    width = flair.shape[-1]
    positive = flair[flair > 0]
    if positive.size < 64:
        return (width - 1) / 2
    head = flair > HEAD_FRACTION * float(np.percentile(positive, PERCENTILES[1]))
    columns = head.sum(axis=(0, 1)).astype(np.float64)  # (W,)
    if columns.sum() == 0:
        return (width - 1) / 2
    centre = float((columns * np.arange(width)).sum() / columns.sum())
    return round(2 * centre) / 2


def mirror_channels(x: torch.Tensor, midline: float) -> torch.Tensor:
    """``(n, C, H, W)`` -> ``(n, 2C, H, W)``: the input, then the input mirrored left-right about
    column ``midline`` (``2 * midline`` an integer); where the mirror falls outside the image, 0
    (background, as the raw intensities have it)."""
    return torch.cat([x, torch.from_numpy(mirrored_columns(x.numpy(), midline, axis=-1))], 1)


def mirrored_columns(values: np.ndarray, midline: float, axis: int) -> np.ndarray:
    """``values`` mirrored left-right about column ``midline`` (``2 * midline`` an integer) of its
    column axis ``axis``, 0 where the mirror falls outside: column ``x`` shows column
    ``2 * midline - x``. The one definition of the mirror, for tensors laid out ``(n, C, H, W)``
    (``axis=-1``, :func:`mirror_channels`) and uint8 images ``(..., H, W, C)`` (``axis=-2``,
    :func:`volume_batches`)."""
    twice = int(round(2 * midline))
    source, out = np.moveaxis(values, axis, -1), np.zeros_like(values)
    target = np.moveaxis(out, axis, -1)  # a view: writing it fills ``out``
    width = source.shape[-1]
    first, last = max(0, twice - (width - 1)), min(width - 1, twice)  # the columns whose twin is inside
    if first <= last:
        target[..., first : last + 1] = source[..., twice - last : twice - first + 1][..., ::-1]
    return out


def tile_stats(stats: torch.Tensor, context: int) -> torch.Tensor:
    """``(..., 4, 3)`` stats -> ``(..., 4, 3 (2c + 1))``, one copy per slice of the neighbourhood."""
    return stats.repeat(*([1] * (stats.dim() - 1)), 2 * context + 1) if context else stats


def intensity_table(stats: np.ndarray) -> np.ndarray:
    """``(4, C)`` stats -> ``(C, 256)`` float32: entry ``[c, v]`` is what :func:`normalize` makes of
    raw value ``v`` in channel ``c``, by the same float32 operations, so that a uint8 volume is
    normalised by lookup, bit for bit as :func:`normalize` would."""
    values = torch.arange(256, dtype=torch.float32).expand(1, stats.shape[1], 1, 256)
    return normalize(values, torch.from_numpy(np.asarray(stats, np.float32)))[0, :, 0].numpy()


def normalized_slices(images: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``(m, H, W, C)`` uint8 -> ``(m, C, H, W)`` float32, each channel looked up in its row of
    ``table`` ``(C, 256)`` (:func:`intensity_table`)."""
    return np.stack([np.take(table[c], images[..., c]) for c in range(images.shape[-1])], 1)


def volume_batches(
    images: np.ndarray, context: int, batch_size: int, stats: np.ndarray | None = None, mirror: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    """A volume's normalised network input, ``batch_size`` slices at a time.

    images: ``(Z, H, W, 3)`` uint8; context: the model's ``context_slices``; stats: ``(4, 3)``
    (default: the volume's own, :func:`volume_stats`); mirror: the model's ``mirror``. Yields
    ``(start, x)`` with ``x`` the input of slices ``start:start + n``, ``(n, 3 (2c + 1), H, W)``
    float32, or ``(n, 6 (2c + 1), H, W)`` with the mirrored channels (n = ``batch_size``, fewer at
    the end). Equal, bit for bit, to :func:`normalize` of :func:`context_stack` (then of
    :func:`mirror_channels`), but each slice is normalised once, by table lookup, rather than once
    per neighbourhood it belongs to, and mirrored as uint8.
    """
    if stats is None:
        stats = volume_stats(images)
    table = intensity_table(stats)  # (3, 256)
    midline = volume_midline(images) if mirror else 0.0
    depth = images.shape[0]
    for start in range(0, depth, batch_size):
        stop = min(start + batch_size, depth)
        first, last = max(start - context, 0), min(stop + context, depth)
        near = context_indices(np.arange(start, stop), depth, context) - first  # (n, 2c + 1) into the block
        raw = images[first:last]  # (m, H, W, 3): the batch and its neighbours
        halves = [raw, mirrored_columns(raw, midline, axis=-2)] if mirror else [raw]
        parts = [np.take(normalized_slices(half, table), near, axis=0) for half in halves]  # (n, 2c + 1, 3, H, W)
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, 1)
        yield start, torch.from_numpy(x.reshape(stop - start, -1, *images.shape[1:3]))
