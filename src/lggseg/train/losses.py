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


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0) -> torch.Tensor:
    """Soft Dice loss + ``bce_weight`` x binary cross-entropy. Shapes ``(B, 1, H, W)``."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return soft_dice_loss(logits, target) + bce_weight * bce
