"""Turning a probability volume into a mask: threshold, then 3D connected-component cleanup."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-connected in 3D


@dataclass(frozen=True)
class PostProcess:
    """How probabilities become a mask; chosen on validation patients, stored with the weights.

    threshold: probability above which a voxel is tumor.
    min_component: 3D components with fewer voxels are removed (0 keeps all).
    keep_largest: keep only the largest 3D component (off by default: multifocal tumors exist).
    """

    threshold: float = 0.5
    min_component: int = 0
    keep_largest: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def apply(prob: np.ndarray, post: PostProcess) -> np.ndarray:
    """prob: ``(Z, H, W)`` float in [0, 1] -> ``(Z, H, W)`` bool mask."""
    mask = prob > post.threshold
    return clean_components(mask, post)


def clean_components(mask: np.ndarray, post: PostProcess) -> np.ndarray:
    """Remove small 3D components (and all but the largest, if asked). mask: ``(Z, H, W)`` bool."""
    if not (post.min_component > 0 or post.keep_largest) or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= max(post.min_component, 1)
    if post.keep_largest:
        keep = np.zeros_like(keep)
        keep[int(sizes.argmax())] = True
    keep[0] = False
    return keep[labels]
