"""Turning a probability volume into a mask: threshold, then slice and 3D connected-component cleanup.

The rules only ever remove something for what it is on its own: a slice whose predicted area is
a speck (``min_slice_area``), a 3D component that is too small, never confidently tumor, or confined
to fewer axial slices than ``min_extent`` (a blob on one or two slices, not a tumor), or an end
slice of a component on which the network is unsure (``min_end_core``: too few pixels at
:data:`CORE` probability; trimmed from the top and bottom inward, never the component's last slice).
The one rule that adds, ``fill_holes``, runs last and fills what a slice's mask encloses. None
compares components with each other, so a confidently found tumor survives however large a
false-positive blob elsewhere is. And the rules never empty a volume the network was sure about:
when they would remove everything, the components of the thresholded mask that reach
:data:`CONFIDENT` stay (a small tumor predicted in fragments, each under ``min_component``,
would otherwise vanish). ``keep_largest`` is kept only so that weights calibrated by older
versions load and predict as they were validated; calibration no longer offers it (it deleted
whole tumors on unseen patients).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lggseg.model.bundle import PostProcess

__all__ = ["PostProcess", "apply", "clean_components", "clear_small_slices", "fill_slice_holes", "trim_unsure_ends"]

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-connected in 3D

CONFIDENT = 0.95
"""A component whose peak probability reaches this is kept when the rules would remove everything."""

CORE = 0.9
"""Probability at which a pixel counts towards a slice's confident core (``min_end_core``)."""


def apply(prob: np.ndarray, post: PostProcess) -> np.ndarray:
    """prob: ``(Z, H, W)`` float in [0, 1] -> ``(Z, H, W)`` bool mask."""
    mask = prob > post.threshold
    return clean_components(mask, post, prob)


def clear_small_slices(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``(Z, H, W)`` bool -> a copy with every slice holding fewer than ``min_area`` voxels cleared."""
    if min_area <= 0:
        return mask
    areas = mask.reshape(len(mask), -1).sum(1)
    cleared = mask.copy()
    cleared[(areas > 0) & (areas < min_area)] = False
    return cleared


def clean_components(mask: np.ndarray, post: PostProcess, prob: np.ndarray | None = None) -> np.ndarray:
    """Clear speck slices, then remove 3D components by size and peak probability. mask, prob: ``(Z, H, W)``.

    ``prob`` is needed for ``post.min_peak > 0`` and ``post.min_end_core > 0``, and for the guard that
    keeps the components reaching :data:`CONFIDENT` when the rules would empty the volume (without
    ``prob``, no guard).
    """
    if post.n_rules == 0 or not mask.any():
        return mask
    cleaned = _component_rules(clear_small_slices(mask, post.min_slice_area), post, prob)
    if post.min_end_core > 0:
        if prob is None:
            raise ValueError("min_end_core needs the probability volume")
        cleaned = trim_unsure_ends(cleaned, prob, post.min_end_core)
    if not cleaned.any() and prob is not None:
        # the rules would empty the volume: the confident components of the thresholded mask stay
        labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
        keep = _peaks(prob, labels, n) >= CONFIDENT
        keep[0] = False
        cleaned = keep[labels]
    return fill_slice_holes(cleaned) if post.fill_holes else cleaned


def fill_slice_holes(mask: np.ndarray) -> np.ndarray:
    """``(Z, H, W)`` bool -> a copy in which each axial slice's enclosed background is filled.

    In-plane only: a background region counts as enclosed when it is not 4-connected to the
    slice's border (as ``scipy.ndimage.binary_fill_holes`` decides for one slice), so a hole open
    to the slice above or below is still filled on its own slice. Works inside each slice's
    bounding box of the mask, where every hole lies (about 0.1 ms a slice). Slices without a
    prediction are untouched.
    """
    filled = mask.copy()
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        rows, cols = np.flatnonzero(mask[z].any(axis=1)), np.flatnonzero(mask[z].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        background, n = ndimage.label(~mask[z][box])  # 4-connected
        if n == 0:
            continue
        # background touching the box's edge reaches the slice's border around the box
        edge = np.concatenate((background[0], background[-1], background[:, 0], background[:, -1]))
        enclosed = np.ones(n + 1, dtype=bool)
        enclosed[edge] = False  # label 0 (the mask itself) is on the edge: the box is tight
        filled[z][box] |= enclosed[background]
    return filled


def _peaks(prob: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Peak probability of each labelled component, ``(n + 1,)`` (index 0: background)."""
    return np.asarray(ndimage.maximum(prob, labels, index=np.arange(n + 1)))


def _extents(labels: np.ndarray) -> np.ndarray:
    """How many axial slices each labelled component spans, ``(n,)`` (labels 1..n of a ``(Z, H, W)`` array)."""
    return np.array([box[0].stop - box[0].start if box else 0 for box in ndimage.find_objects(labels)], dtype=np.int64)


def _component_rules(mask: np.ndarray, post: PostProcess, prob: np.ndarray | None) -> np.ndarray:
    """Apply ``min_component``, ``min_peak``, ``min_extent`` and the legacy ``keep_largest`` to 3D components."""
    if not (post.min_component > 0 or post.min_peak > 0 or post.min_extent > 0 or post.keep_largest) or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= max(post.min_component, 1)
    if post.min_peak > 0:
        if prob is None:
            raise ValueError("min_peak needs the probability volume")
        keep &= _peaks(prob, labels, n) >= post.min_peak
    if post.min_extent > 0:
        keep[1:] &= _extents(labels) >= post.min_extent
    if post.keep_largest:
        keep = np.zeros_like(keep)
        keep[int(sizes.argmax())] = True
    keep[0] = False
    return keep[labels]


def trim_unsure_ends(mask: np.ndarray, prob: np.ndarray, min_core: int) -> np.ndarray:
    """Trim each 3D component's end slices while they hold fewer than ``min_core`` pixels at :data:`CORE`.

    mask: ``(Z, H, W)`` bool; prob: ``(Z, H, W)`` float. Works from the top and the bottom slice of
    each 26-connected component inward and stops at the first confident slice; a component always
    keeps at least one slice, so no component disappears. Returns a new mask.
    """
    if min_core <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    depth = len(mask)
    core = labels * (prob >= CORE)
    z_of = np.broadcast_to(np.arange(depth)[:, None, None], mask.shape)
    # core_counts[c, z]: pixels of component c on slice z at CORE probability or more
    core_counts = np.bincount((core * depth + z_of)[core > 0], minlength=(n + 1) * depth).reshape(n + 1, depth)
    trimmed = mask.copy()
    for c, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        lo, hi = box[0].start, box[0].stop - 1
        while lo < hi and core_counts[c, lo] < min_core:
            trimmed[lo][labels[lo] == c] = False
            lo += 1
        while hi > lo and core_counts[c, hi] < min_core:
            trimmed[hi][labels[hi] == c] = False
            hi -= 1
    return trimmed
