"""Segmentation losses on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice pooled over the batch.

    logits, target: ``(B, 1, H, W)``; target in {0, 1}. Pooling over the batch keeps the loss
    defined on tumor-free slices, which are half of what the sampler draws.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + smooth) / (prob.sum() + target.sum() + smooth)


def per_image_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice averaged over the images that hold tumor, so a small tumor's slice weighs as
    much as a large one's (pooled Dice is dominated by the large ones).

    logits, target: ``(B, 1, H, W)``. A batch without tumor falls back to :func:`soft_dice_loss`.
    """
    has_tumor = target.flatten(1).amax(1) > 0
    if not bool(has_tumor.any()):
        return soft_dice_loss(logits, target, smooth)
    prob = torch.sigmoid(logits.float()[has_tumor]).flatten(1)
    truth = target.float()[has_tumor].flatten(1)
    dice = (2 * (prob * truth).sum(1) + smooth) / (prob.sum(1) + truth.sum(1) + smooth)
    return 1 - dice.mean()


def dice_bce_loss(
    logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0, per_image: bool = False
) -> torch.Tensor:
    """Soft Dice loss (pooled over the batch, or per tumor image with ``per_image``) + ``bce_weight``
    x binary cross-entropy. Shapes ``(B, 1, H, W)``."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    dice = per_image_dice_loss(logits, target) if per_image else soft_dice_loss(logits, target)
    return dice + bce_weight * bce
