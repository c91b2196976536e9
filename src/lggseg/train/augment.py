"""Train-time augmentation (batched, in torch) and tumor-biased crops.

Augmentation runs on whole batches with ``torch.nn.functional.grid_sample`` on raw intensities
(before :func:`lggseg.infer.preprocess.normalize`), so image and mask get the same geometric
transform, and the padding is the true background (0). Gamma and the bias field bend the raw
intensities before the warp; gain, offset, noise and FLAIR-only dropout come after normalisation.
With a patch size, the annotation is warped whole to place the patches, and the images are
resampled only inside them.
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
    images: torch.Tensor,
    masks: torch.Tensor,
    stats: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    crop_size: int = 0,
    bright_prob: float = 0.0,
    midlines: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment and normalise a batch, optionally as tumor-biased patches.

    images: ``(B, C, H, W)`` float raw intensities, C = 3 or 3 x slices (2.5D). masks:
    ``(B, K, H, W)`` float: channel 0 the annotation in {0, 1} (kept binary), any further channel a
    soft target in [0, 1] (teacher probabilities; warped, not thresholded). stats: ``(B, 4, C)``.
    Returns normalised images and masks of the same shapes, or ``(B, C, S, S)`` and ``(B, K, S, S)``
    patches for ``crop_size`` S: each patch is where :func:`choose_windows` puts it on the
    transformed slice (``bright_prob``: its hard-negative share). Only the patch's pixels are
    resampled and processed, which gives the patch of the whole transformed slice at a fraction of
    the cost (the mask is warped whole, to place the patch).

    midlines: ``(B,)`` each slice's head midline column (:func:`lggseg.infer.preprocess.volume_midline`),
    for a mirror model: the output then has ``2C`` channels, the C channels and the same C sampled
    at the mirror image of every sampling point about the midline (the contralateral pixel of the
    untransformed slice), as :func:`lggseg.infer.preprocess.mirror_channels` gives at inference.
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
    if cfg.bias_field_prob > 0 and bool(use_field.any()):  # only the drawn samples: a zero field is 1
        images = images.clone()
        images[use_field] *= bias_field(field_coeffs[use_field], images.shape[-2], images.shape[-1])

    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    warped = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = torch.cat([(warped[:, :1] > 0.5).float(), warped[:, 1:]], 1)  # soft targets stay soft
    if 0 < crop_size < min(images.shape[-2:]):
        centre = images.shape[1] // 2  # FLAIR of the centre slice (channel 1 of 3), for hard negatives
        flair = None
        if bright_prob > 0:  # clipped as normalize clips it: pixels above the clip range rank equal
            flair = torch.minimum(_warp(images[:, centre : centre + 1], grid)[:, 0], stats[:, 1, centre, None, None])
        windows = choose_windows(masks[:, 0], flair, crop_size, generator, bright_prob)
        grid = _crop(grid.permute(0, 3, 1, 2), windows, crop_size).permute(0, 2, 3, 1)
        masks = _crop(masks, windows, crop_size)
    if midlines is not None:
        images, stats = mirrored_warp(images, grid, midlines), stats.repeat(1, 1, 2)
        gain, bias = gain.repeat(1, 2), bias.repeat(1, 2)  # one scan: the mirrored copy shares its contrast
    else:
        images = _warp(images, grid)

    out = normalize(images, stats)
    gain = torch.where(use_intensity[:, None], gain, torch.ones_like(gain))
    bias = torch.where(use_intensity[:, None], bias, torch.zeros_like(bias))
    out = out * gain[:, :, None, None] + bias[:, :, None, None]
    if cfg.noise_std > 0:
        noise_gen = torch.Generator().manual_seed(noise_seed)
        out = out + cfg.noise_std * torch.randn(out.shape, generator=noise_gen)
    if flair_only is not None and m == 3:  # modality dropout: the FLAIR-only input of predict, slice by slice
        by_slice = out.unflatten(1, (-1, 3))  # (B, slices (x 2 mirrored), 3, H, W)
        flair_all = by_slice[:, :, 1:2].expand_as(by_slice)
        out = torch.where(flair_only[:, None, None, None, None], flair_all, by_slice).flatten(1, 2)
    return out, masks


def mirrored_warp(images: torch.Tensor, grid: torch.Tensor, midlines: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` sampled at ``grid`` ``(B, h, w, 2)`` and at its mirror about each slice's
    midline column (``midlines`` ``(B,)``) -> ``(B, 2C, h, w)``."""
    width = images.shape[-1]
    centre = (2 * midlines.to(grid.dtype) + 1) / width - 1  # the midline in grid_sample's x (align_corners=False)
    mirror = grid.clone()
    mirror[..., 0] = 2 * centre[:, None, None] - grid[..., 0]
    return torch.cat([_warp(images, grid), _warp(images, mirror)], 1)


def _warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``(B, C, H, W)`` at ``grid`` ``(B, h, w, 2)``; outside is background (0)."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _crop(x: torch.Tensor, windows: list[tuple[int, int]], size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)``: sample i's patch at ``windows[i]`` (top, left)."""
    return torch.stack([x[i, :, top : top + size, left : left + size] for i, (top, left) in enumerate(windows)])


def gamma_curve(images: torch.Tensor, stats: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Bend each channel's contrast inside its volume's clip range; the background (0) stays 0.

    images: ``(B, C, H, W)`` raw intensities; stats: ``(B, 4, C)``; gamma: ``(B, C)`` (1 = unchanged).
    """
    lo, hi = stats[:, 0, :, None, None], stats[:, 1, :, None, None]
    span = (hi - lo).clamp_min(1e-3)
    unit = ((images - lo) / span).clamp(0, 1)
    bends = gamma != 1  # (B, C): the power is taken only where it changes something
    if bool(bends.any()):
        unit[bends] = unit[bends] ** gamma[bends][:, None, None]
    bent = lo + span * unit
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


def choose_windows(
    annotation: torch.Tensor,
    flair: torch.Tensor | None,
    size: int,
    generator: torch.Generator,
    bright_prob: float = 0.0,
) -> list[tuple[int, int]]:
    """Place a ``size`` x ``size`` patch on each slice; a patch of a slice with tumor contains tumor.

    annotation: ``(B, H, W)``, the (transformed) annotation; flair: ``(B, H, W)``, the centre
    slice's FLAIR, needed when ``bright_prob`` > 0. A tumor slice's patch is centred on one of its
    tumor pixels, chosen at random, moved by up to a quarter of ``size``; other slices get a patch at
    a uniformly random place, or, with probability ``bright_prob``, a hard negative: a patch centred
    the same way on one of the slice's brightest FLAIR pixels (top :data:`BRIGHT_QUANTILE`), where
    tumor-free tissue is taken for tumor. Returns each patch's ``(top, left)``.
    """
    b, h, w = annotation.shape
    windows = []
    for i in range(b):
        where = torch.nonzero(annotation[i] > 0.5)
        if not len(where) and bright_prob > 0 and float(torch.rand(1, generator=generator)) < bright_prob:
            if flair is None:
                raise ValueError("hard negatives (bright_prob > 0) need the FLAIR channel")
            brightest = torch.topk(flair[i].flatten(), max(1, int(round((1 - BRIGHT_QUANTILE) * h * w)))).indices
            where = torch.stack([brightest // w, brightest % w], 1)
        if len(where):
            cy, cx = where[int(torch.randint(len(where), (1,), generator=generator))].tolist()
            jitter = torch.randint(-size // 4, size // 4 + 1, (2,), generator=generator).tolist()
            top, left = cy + jitter[0] - size // 2, cx + jitter[1] - size // 2
        else:
            top = int(torch.randint(h - size + 1, (1,), generator=generator))
            left = int(torch.randint(w - size + 1, (1,), generator=generator))
        windows.append((min(max(top, 0), h - size), min(max(left, 0), w - size)))
    return windows
