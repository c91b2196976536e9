"""NIfTI volumes for 3D Slicer and ITK-SNAP.

Internally a volume is ``(Z, H, W)`` (slice, row, column) as in the slice files. In NIfTI the
axes are stored as ``(W, H, Z)`` with rows flipped, so that with an identity affine the axial
view in 3D Slicer / ITK-SNAP shows the slice upright as in the TIFF. The same mapping is used in
both directions, so a mask written for an input NIfTI overlays that input exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lggseg.errors import LggsegError
from lggseg.io.atomic import atomic_path

SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def to_nifti_axes(volume: np.ndarray) -> np.ndarray:
    """``(Z, H, W)`` -> ``(W, H, Z)`` with rows flipped."""
    return np.ascontiguousarray(np.flip(np.moveaxis(volume, (0, 1, 2), (2, 1, 0)), axis=1))


def from_nifti_axes(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_nifti_axes`: ``(W, H, Z)`` -> ``(Z, H, W)``."""
    return np.ascontiguousarray(np.moveaxis(np.flip(data, axis=1), (2, 1, 0), (0, 1, 2)))


def save_volume(volume: np.ndarray, path: str | Path, reference: Any = None) -> None:
    """Write a ``(Z, H, W)`` volume atomically; copy affine and header from ``reference`` if given."""
    import nibabel as nib

    data = to_nifti_axes(volume)
    if reference is not None:
        image = nib.Nifti1Image(data, reference.affine, reference.header)
        image.set_data_dtype(data.dtype)
    else:
        image = nib.Nifti1Image(data, np.eye(4))
    image.header["descrip"] = b"lggseg"
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def load_volume(path: str | Path) -> tuple[np.ndarray, object]:
    """Read a NIfTI MRI as ``(Z, H, W, 3)`` uint8 plus the nibabel image (for affine/header).

    A 3D volume is taken as FLAIR and repeated to 3 channels; a 4D volume with 3 components in
    the last axis is taken as (pre-contrast, FLAIR, post-contrast). Intensities are rescaled to
    0..255 from the volume's 0 and its 99.9th percentile (larger values saturate).
    """
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except FileNotFoundError:
        raise LggsegError(f"{path}: no such file") from None
    except Exception as exc:
        raise LggsegError(
            f"{path}: cannot read NIfTI ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 3:
        channels = [data] * 3
    elif data.ndim == 4 and data.shape[3] == 3:
        channels = [data[..., c] for c in range(3)]
    else:
        raise LggsegError(f"{path}: expected a 3D volume or 3 channels in a 4th axis, got shape {data.shape}")
    if min(data.shape[:3]) < 1 or data.shape[0] < 8 or data.shape[1] < 8:
        raise LggsegError(f"{path}: volume of shape {data.shape[:3]} is too small")
    out = []
    for channel in channels:
        finite = np.nan_to_num(channel, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(np.percentile(finite, 99.9)) if finite.size else 0.0
        lo = min(0.0, float(finite.min()))
        scaled = np.clip((finite - lo) / (top - lo) * 255.0, 0, 255) if top > lo else np.zeros_like(finite)
        out.append(from_nifti_axes(scaled.astype(np.uint8)))
    return np.stack(out, axis=-1), image
