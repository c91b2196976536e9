"""Train-time augmentation (batched, in torch) and tumor-biased crops.

Augmentation runs on whole batches with ``torch.nn.functional.grid_sample`` on raw intensities
(before :func:`lggseg.infer.preprocess.normalize`), so image and mask get the same geometric
transform, and the padding is the true background (0). Intensity changes come after normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lggseg.infer.preprocess import normalize


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
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    bias_field_prob: float = 0.0
    bias_field_std: float = 0.3
    flair_only_prob: float = 0.0  # share of samples shown as FLAIR alone (FLAIR in all 3 channels, as predict does)


def augment(
    images: torch.Tensor, masks: torch.Tensor, stats: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment and normalise a batch.

    images: ``(B, C, H, W)`` float raw intensities, C = 3 or 3 x slices (2.5D). masks:
    ``(B, K, H, W)`` float: channel 0 the annotation in {0, 1} (kept binary), any further channel a
    soft target in [0, 1] (teacher probabilities; warped, not thresholded). stats: ``(B, 4, C)``.
    Returns normalised images and masks of the same shapes.
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
    # Intensity draws are per modality; a 2.5D input (C = 3 x slices) repeats them for every slice,
    # since neighbouring slices of one scan share its contrast.
    m = 3 if images.shape[1] % 3 == 0 else images.shape[1]
    tile = images.shape[1] // m
    gain = 1 + cfg.gain_std * torch.randn(b, m, generator=generator).repeat(1, tile)
    bias = cfg.bias_std * torch.randn(b, m, generator=generator).repeat(1, tile)
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    use_gamma = (torch.rand(b, m, generator=generator) < cfg.gamma_prob).repeat(1, tile)
    log_gamma = torch.stack(
        [uniform(math.log(cfg.gamma_range[0]), math.log(cfg.gamma_range[1])) for _ in range(m)], 1
    ).repeat(1, tile)
    use_field = torch.rand(b, generator=generator) < cfg.bias_field_prob
    field_coeffs = cfg.bias_field_std * torch.randn(b, m, 5, generator=generator).repeat(1, tile, 1)
    flair_only = torch.rand(b, generator=generator) < cfg.flair_only_prob if cfg.flair_only_prob > 0 else None

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sign, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sign, cos, shift[:, 1]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    plain = torch.where(flip[:, None, None], identity * torch.tensor([[-1.0], [1.0]]), identity)
    theta = torch.where(use_affine[:, None, None], theta, plain)

    if cfg.gamma_prob > 0:
        images = gamma_curve(images, stats, torch.where(use_gamma, log_gamma.exp(), torch.ones_like(log_gamma)))
    if cfg.bias_field_prob > 0:
        images = images * bias_field(field_coeffs * use_field[:, None, None], images.shape[-2], images.shape[-1])

    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = torch.cat([(warped[:, :1] > 0.5).float(), warped[:, 1:]], 1)  # soft targets stay soft

    out = normalize(images, stats)
    gain = torch.where(use_intensity[:, None], gain, torch.ones_like(gain))
    bias = torch.where(use_intensity[:, None], bias, torch.zeros_like(bias))
    out = out * gain[:, :, None, None] + bias[:, :, None, None]
    if cfg.noise_std > 0:
        noise_gen = torch.Generator().manual_seed(noise_seed)
        out = out + cfg.noise_std * torch.randn(out.shape, generator=noise_gen)
    if flair_only is not None and m == 3:  # modality dropout: the FLAIR-only input of predict, slice by slice
        by_slice = out.unflatten(1, (tile, 3))  # (B, slices, 3, H, W)
        flair = by_slice[:, :, 1:2].expand_as(by_slice)
        out = torch.where(flair_only[:, None, None, None, None], flair, by_slice).flatten(1, 2)
    return out, masks


def gamma_curve(images: torch.Tensor, stats: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Bend each channel's contrast inside its volume's clip range; the background (0) stays 0.

    images: ``(B, C, H, W)`` raw intensities; stats: ``(B, 4, C)``; gamma: ``(B, C)`` (1 = unchanged).
    """
    lo, hi = stats[:, 0, :, None, None], stats[:, 1, :, None, None]
    span = (hi - lo).clamp_min(1e-3)
    unit = ((images - lo) / span).clamp(0, 1)
    bent = lo + span * unit ** gamma[:, :, None, None]
    return torch.where(images > lo, bent, images)


def bias_field(coeffs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A smooth multiplicative field (the MRI coil's inhomogeneity), ``exp`` of a quadratic.

    coeffs: ``(B, C, 5)``, weights of x, y, x², y², xy on [-1, 1]². Returns ``(B, C, H, W)``;
    zero coefficients give ones.
    """
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    basis = torch.stack([x, y, x * x - 1 / 3, y * y - 1 / 3, x * y])  # (5, H, W), zero-mean terms
    return torch.einsum("bck,khw->bchw", coeffs, basis).exp()


BRIGHT_QUANTILE = 0.99
"""Hard-negative patches are centred on one of the slice's FLAIR pixels above this quantile (its top 1%)."""


def tumor_biased_crop(
    images: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    generator: torch.Generator,
    bright_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``size`` x ``size`` patches; a patch of a slice with tumor contains tumor.

    images: ``(B, C, H, W)``; masks: ``(B, K, H, W)``, channel 0 the annotation. A tumor slice's
    patch is centred on one of its tumor pixels, chosen at random, moved by up to a quarter of
    ``size``; other slices get a patch at a uniformly random place, or, with probability
    ``bright_prob``, a hard negative: a patch centred the same way on one of the brightest FLAIR
    pixels of its centre slice (top :data:`BRIGHT_QUANTILE`), where tumor-free tissue is taken for
    tumor. Returns
    ``(B, C, size, size)`` and ``(B, K, size, size)``.
    """
    b, _, h, w = images.shape
    if size >= min(h, w):
        return images, masks
    out_images, out_masks = [], []
    for i in range(b):
        where = torch.nonzero(masks[i, 0] > 0.5)
        if not len(where) and bright_prob > 0 and float(torch.rand(1, generator=generator)) < bright_prob:
            flair = images[i, images.shape[1] // 2].flatten()  # FLAIR of the centre slice (channel 1 of 3)
            brightest = torch.topk(flair, max(1, int(round((1 - BRIGHT_QUANTILE) * flair.numel())))).indices
            where = torch.stack([brightest // w, brightest % w], 1)
        if len(where):
            cy, cx = where[int(torch.randint(len(where), (1,), generator=generator))].tolist()
            jitter = torch.randint(-size // 4, size // 4 + 1, (2,), generator=generator).tolist()
            top, left = cy + jitter[0] - size // 2, cx + jitter[1] - size // 2
        else:
            top = int(torch.randint(h - size + 1, (1,), generator=generator))
            left = int(torch.randint(w - size + 1, (1,), generator=generator))
        top, left = min(max(top, 0), h - size), min(max(left, 0), w - size)
        out_images.append(images[i, :, top : top + size, left : left + size])
        out_masks.append(masks[i, :, top : top + size, left : left + size])
    return torch.stack(out_images), torch.stack(out_masks)
