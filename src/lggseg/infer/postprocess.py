"""Turning a probability volume into a mask: threshold, then 3D connected-component cleanup.

The component rules only ever remove a component for what it is on its own (too small, or never
confidently tumor); none compares components with each other, so a confidently found tumor
survives however large a false-positive blob elsewhere is. And a rule never empties a volume
the network was sure about: when the rules would remove every component, the components that
reach :data:`CONFIDENT` stay (a small tumor predicted in fragments, each under ``min_component``,
would otherwise vanish). ``keep_largest`` is kept only so that
weights calibrated by older versions load and predict as they were validated; calibration no
longer offers it (it deleted whole tumors on unseen patients).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lggseg.model.bundle import PostProcess

__all__ = ["PostProcess", "apply", "clean_components"]

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-connected in 3D

CONFIDENT = 0.95
"""A component whose peak probability reaches this is kept when the rules would remove everything."""


def apply(prob: np.ndarray, post: PostProcess) -> np.ndarray:
    """prob: ``(Z, H, W)`` float in [0, 1] -> ``(Z, H, W)`` bool mask."""
    mask = prob > post.threshold
    return clean_components(mask, post, prob)


def clean_components(mask: np.ndarray, post: PostProcess, prob: np.ndarray | None = None) -> np.ndarray:
    """Remove 3D components by size and peak probability. mask, prob: ``(Z, H, W)``.

    ``prob`` is needed for ``post.min_peak > 0``, and for the guard that keeps the components
    reaching :data:`CONFIDENT` when the rules would empty the volume (without ``prob``, no guard).
    """
    if not (post.min_component > 0 or post.min_peak > 0 or post.keep_largest) or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= max(post.min_component, 1)
    peaks = None  # per-component peak probability, computed only when a rule or the guard needs it
    if post.min_peak > 0:
        if prob is None:
            raise ValueError("min_peak needs the probability volume")
        peaks = np.asarray(ndimage.maximum(prob, labels, index=np.arange(n + 1)))
        keep &= peaks >= post.min_peak
    if post.keep_largest:
        keep = np.zeros_like(keep)
        keep[int(sizes.argmax())] = True
    keep[0] = False
    if not keep.any() and prob is not None:  # the rules would empty a volume: confident components stay
        if peaks is None:
            peaks = np.asarray(ndimage.maximum(prob, labels, index=np.arange(n + 1)))
        keep = peaks >= CONFIDENT
        keep[0] = False
    return keep[labels]
