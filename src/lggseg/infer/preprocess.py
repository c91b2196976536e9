"""Intensity normalisation per volume, the same for training and inference.

Per channel, over the voxels of one volume that are above 0 (the head): clip to the [0.5, 99.5]
percentiles, then subtract the mean and divide by the standard deviation of the clipped values.
The four numbers per channel are the volume's *stats*, shape ``(4, 3)``: rows ``lo, hi, mean,
std``. A single slice given alone is normalised with its own stats.
"""

from __future__ import annotations

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

    images: ``(B, 3, H, W)`` float (0..255). stats: ``(B, 4, 3)`` or ``(4, 3)``. Returns float32.
    """
    if stats.dim() == 2:
        stats = stats.unsqueeze(0).expand(images.shape[0], -1, -1)
    lo, hi, mean, std = (stats[:, i, :, None, None] for i in range(4))
    return (torch.minimum(torch.maximum(images, lo), hi) - mean) / std
