"""Intensity normalisation (per volume) and train-time augmentation (batched, in torch).

Normalisation, per channel, over the voxels of one volume that are above 0 (the head):
clip to the [0.5, 99.5] percentiles, then subtract the mean and divide by the standard deviation
of the clipped values. The four numbers per channel are the volume's *stats*, shape ``(4, 3)``:
rows ``lo, hi, mean, std``. A single slice given alone is normalised with its own stats.

Augmentation runs on whole batches with ``torch.nn.functional.grid_sample`` on raw intensities
(before normalisation), so image and mask get the same geometric transform, and the padding is
the true background (0). Intensity changes come after normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the train-time augmentation."""

    flip_prob: float = 0.5
    affine_prob: float = 0.8
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.08
    intensity_prob: float = 0.8
    gain_std: float = 0.12
    bias_std: float = 0.12
    noise_std: float = 0.03


def augment(
    images: torch.Tensor, masks: torch.Tensor, stats: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment and normalise a batch.

    images: ``(B, 3, H, W)`` float raw intensities. masks: ``(B, 1, H, W)`` float {0, 1}.
    stats: ``(B, 4, 3)``. Returns normalised images and masks of the same shapes.
    """
    b = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    flip = torch.rand(b, generator=generator) < cfg.flip_prob
    use_affine = torch.rand(b, generator=generator) < cfg.affine_prob
    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180.0
    scale = uniform(*cfg.scale)
    shift = torch.stack([uniform(-cfg.translate, cfg.translate), uniform(-cfg.translate, cfg.translate)], 1) * 2
    use_intensity = torch.rand(b, generator=generator) < cfg.intensity_prob
    gain = 1 + cfg.gain_std * torch.randn(b, images.shape[1], generator=generator)
    bias = cfg.bias_std * torch.randn(b, images.shape[1], generator=generator)
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sign, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sign, cos, shift[:, 1]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    plain = torch.where(flip[:, None, None], identity * torch.tensor([[-1.0], [1.0]]), identity)
    theta = torch.where(use_affine[:, None, None], theta, plain)

    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()

    out = normalize(images, stats)
    gain = torch.where(use_intensity[:, None], gain, torch.ones_like(gain))
    bias = torch.where(use_intensity[:, None], bias, torch.zeros_like(bias))
    out = out * gain[:, :, None, None] + bias[:, :, None, None]
    if cfg.noise_std > 0:
        noise_gen = torch.Generator().manual_seed(noise_seed)
        out = out + cfg.noise_std * torch.randn(out.shape, generator=noise_gen)
    return out, masks
