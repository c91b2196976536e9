"""Reorient a scanner volume (NIfTI or DICOM series) to the model's canonical orientation, and back.

Canonical orientation
---------------------
The model was trained on the Kaggle TCGA-LGG slice stacks: axial slices, each displayed as a
256 x 256 image. As an array ``(Z, H, W)`` (slice, row, column) that stack is, anatomically::

    Z: slice 1 -> N        runs inferior -> superior   (axis code "S")
    H: row 0 -> 255        runs anterior -> posterior  (axis code "P")
    W: column 0 -> 255     runs patient right -> left  (axis code "L", radiological display)

so ``CANONICAL_AXCODES == ("S", "P", "L")`` in nibabel's notation (the code names the end each
axis runs *towards*, in RAS+ world coordinates). This was checked on the data: the skull base
is in the first slices and the vertex in the last, the orbits are at the top of the image, and
the tumour centroid falls in the image's right half for all 48 patients whose TCGA
``laterality`` is *left* and in the left half for 48 of the 49 with *right*.

``to_canonical`` permutes and flips the voxel axes (never interpolates) so that the axis closest
to superior-inferior becomes ``Z`` and the in-plane axes match the slice stack; ``from_canonical``
undoes exactly that, so a mask can be written with the input's own affine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lggseg.errors import LggsegError

CANONICAL_AXCODES: tuple[str, str, str] = ("S", "P", "L")
"""Anatomical direction of increasing index along ``(Z, H, W)`` of a canonical array."""

OBLIQUE_LIMIT_DEG = 20.0
"""Tilt of the slices from true axial above which :func:`orientation_warning` warns.

Clinical axial scans are routinely tilted 10-20 degrees (along the AC-PC line); the training data
were acquired that way too, so such a tilt is no reason to warn."""

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}  # world axis (R, A, S) a slice normal is nearest to
_ANISOTROPY = 1.5  # an axis this much coarser than both others is taken as the acquisition's slice axis


@dataclass(frozen=True)
class CanonicalVolume:
    """A volume in the canonical orientation plus what is needed to map a result back.

    Attributes:
        array: ``(Z, H, W)`` or ``(Z, H, W, C)``, axes running S, P, L (see the module docstring).
        spacing_mm: voxel size along ``(Z, H, W)`` in mm, i.e. ``(z, y, x)``.
        affine: 4x4, canonical voxel index ``(z, h, w)`` -> RAS+ world mm (nibabel convention).
        input_shape: shape of the array that was given to :func:`to_canonical`.
        input_affine: 4x4 affine of that array (voxel -> RAS+ mm).
        input_ornt: ``nibabel.orientations.io_orientation`` of ``input_affine`` (3x2).
        transform: ``ornt_transform(input_ornt, canonical)``; applied with ``apply_orientation``.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    input_shape: tuple[int, ...]
    input_affine: np.ndarray
    input_ornt: np.ndarray
    transform: np.ndarray

    @property
    def input_axcodes(self) -> tuple[str, str, str]:
        """Axis codes of the input's first three voxel axes, e.g. ``("L", "P", "S")``."""
        from nibabel.orientations import ornt2axcodes

        codes = ornt2axcodes(self.input_ornt)
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (from the affine's determinant, so exact for oblique grids)."""
        return abs(float(np.linalg.det(self.input_affine[:3, :3]))) / 1000.0


def _check_affine(affine: np.ndarray) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise LggsegError(f"the affine must be a finite 4x4 matrix, got shape {aff.shape}")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise LggsegError("the affine is singular (a voxel axis has zero length or two axes are parallel)")
    return aff


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Length in mm of a step along each of the three voxel axes (input order)."""
    aff = _check_affine(affine)
    return tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))  # type: ignore[return-value]


def _input_ornt(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise LggsegError("cannot tell the anatomical direction of every voxel axis from the affine")
    return ornt


def _slice_normal(affine: np.ndarray, slice_axis: int) -> np.ndarray:
    """Unit normal (RAS+) of the planes spanned by the two voxel axes other than ``slice_axis``."""
    cols = [affine[:3, i] for i in range(3) if i != slice_axis]
    normal = np.cross(cols[0], cols[1])
    return normal / np.linalg.norm(normal)


def _si_axis(affine: np.ndarray) -> int:
    """The voxel axis that ``to_canonical`` makes ``Z``: the one nibabel maps to superior-inferior."""
    return int(np.nonzero(_input_ornt(affine)[:, 0] == 2)[0][0])


def obliquity_degrees(affine: np.ndarray, slice_axis: int | None = None) -> float:
    """Angle in degrees between the slice normal and the true superior-inferior axis.

    Args:
        affine: 4x4 voxel -> RAS+ mm.
        slice_axis: voxel axis (0, 1, 2) whose slices are meant; default: the voxel axis closest
            to superior-inferior, i.e. the slices the model will see after :func:`to_canonical`.

    Returns:
        0 for a true axial grid; up to about 55 for the default axis; up to 90 for an explicit axis
        (90 for sagittal or coronal slices).
    """
    aff = _check_affine(affine)
    axis = _si_axis(aff) if slice_axis is None else int(slice_axis)
    if axis not in (0, 1, 2):
        raise LggsegError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    cos = abs(float(_slice_normal(aff, axis)[2]))
    return float(np.degrees(np.arccos(min(1.0, cos))))


def acquisition_axis(affine: np.ndarray) -> int:
    """Best guess of the voxel axis along which the slices were acquired.

    An axis at least 1.5x coarser than both others (thick 2D slices) is taken; for a near-isotropic
    grid it is voxel axis 2, the axis converters (dcm2niix, 3D Slicer, :mod:`lggseg.io.dicom`)
    stack DICOM slices along.
    """
    spacing = np.asarray(voxel_spacing(affine))
    for axis in range(3):
        others = np.delete(spacing, axis)
        if spacing[axis] >= _ANISOTROPY * others.max():
            return axis
    return 2


def acquisition_plane(affine: np.ndarray) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the plane of the acquired slices (see above)."""
    aff = _check_affine(affine)
    normal = _slice_normal(aff, acquisition_axis(aff))
    return _PLANES[int(np.argmax(np.abs(normal)))]


def orientation_warning(affine: np.ndarray, limit_deg: float = OBLIQUE_LIMIT_DEG) -> str | None:
    """A one-line warning when the acquisition is not axial or is oblique beyond ``limit_deg``.

    Returns ``None`` for an axial acquisition tilted at most ``limit_deg`` from true axial.
    """
    aff = _check_affine(affine)
    axis = acquisition_axis(aff)
    plane = acquisition_plane(aff)
    spacing = voxel_spacing(aff)
    if plane != "axial":
        angle = obliquity_degrees(aff, slice_axis=axis)
        si = _si_axis(aff)
        inplane = [spacing[i] for i in range(3) if i != si]
        tilt = obliquity_degrees(aff)
        return (
            f"the scan was acquired {plane} (slice normal {angle:.1f} deg from the superior-inferior axis), "
            f"not axial; it is resliced to axial without interpolation, so the model sees axial pixels of "
            f"{inplane[0]:.2g} x {inplane[1]:.2g} mm tilted {tilt:.1f} deg from true axial: expect lower accuracy"
        )
    angle = obliquity_degrees(aff, slice_axis=axis)
    if angle > limit_deg:
        return (
            f"the axial slices are oblique: {angle:.1f} deg from true axial (more than {limit_deg:g} deg); "
            "they are segmented as acquired, without resampling: expect lower accuracy"
        )
    return None


def _spatial(data: np.ndarray) -> np.ndarray:
    """Validate the dimensions: 3D, or 4D with channels last (a singleton channel is dropped)."""
    arr = np.asarray(data)
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector images are stored (X, Y, Z, 1, C)
        arr = arr[:, :, :, 0, :]
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4):
        raise LggsegError(f"expected a 3D volume (optionally with channels in a 4th axis), got shape {arr.shape}")
    if min(arr.shape[:3]) < 1:
        raise LggsegError(f"the volume is empty: shape {arr.shape}")
    return arr


def to_canonical(data: np.ndarray, affine: np.ndarray) -> CanonicalVolume:
    """Permute and flip ``data`` into the canonical ``(Z, H, W[, C])`` = (S, P, L) orientation.

    Args:
        data: ``(I, J, K)`` or ``(I, J, K, C)`` in its own voxel order (e.g. a NIfTI's ``dataobj``, or
            ``(X=columns, Y=rows, Z=slices)`` from :func:`lggseg.io.dicom.read_series`). A trailing
            singleton axis (``(I, J, K, 1)`` or NIfTI's ``(I, J, K, 1, C)``) is dropped.
        affine: 4x4, voxel ``(i, j, k)`` -> RAS+ world mm. Any axis order, flips, LPS/LAS/RAS storage;
            an oblique affine is taken at its nearest axes (the slices are not resampled).

    Returns:
        A :class:`CanonicalVolume`; ``array`` is a contiguous copy with ``data``'s dtype.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    arr = _spatial(data)
    aff = _check_affine(affine)
    ornt = _input_ornt(aff)
    transform = ornt_transform(ornt, axcodes2ornt(CANONICAL_AXCODES))
    canonical = np.ascontiguousarray(apply_orientation(arr, transform))
    can_affine = aff @ inv_ornt_aff(transform, arr.shape[:3])
    spacing = tuple(float(v) for v in np.linalg.norm(can_affine[:3, :3], axis=0))
    return CanonicalVolume(
        array=canonical,
        spacing_mm=spacing,  # type: ignore[arg-type]
        affine=can_affine,
        input_shape=tuple(int(n) for n in np.shape(data)),
        input_affine=aff,
        input_ornt=ornt,
        transform=transform,
    )


def from_canonical(mask: np.ndarray, ref: CanonicalVolume) -> np.ndarray:
    """Map a canonical ``(Z, H, W)`` (or ``(Z, H, W, C)``) array back to the input's voxel grid.

    Args:
        mask: same ``(Z, H, W)`` as ``ref.array`` (any dtype; trailing axes are carried along).
        ref: what :func:`to_canonical` returned for the input.

    Returns:
        ``(I, J, K[, ...])`` matching the input's first three axes, so that
        ``nibabel.Nifti1Image(result, ref.input_affine)`` overlays the input voxel for voxel.
        A 4D input's channel axis is not restored: a mask has none.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    arr = np.asarray(mask)
    if arr.shape[:3] != ref.array.shape[:3]:
        raise LggsegError(f"mask shape {arr.shape[:3]} does not match the canonical volume {ref.array.shape[:3]}")
    back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), ref.input_ornt)
    out = np.ascontiguousarray(apply_orientation(arr, back))
    if out.shape[:3] != tuple(ref.input_shape[:3]):  # pragma: no cover - guards a nibabel change
        raise LggsegError(f"internal error: mapped mask {out.shape[:3]} != input grid {ref.input_shape[:3]}")
    return out


def canonical_grid(shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """The canonical ``(Z, H, W)`` shape and 4x4 affine :func:`to_canonical` would give, without the data.

    Two volumes with equal canonical grids cover the same voxels in space, whatever their storage order.
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    aff = _check_affine(affine)
    transform = ornt_transform(_input_ornt(aff), axcodes2ornt(CANONICAL_AXCODES))
    spatial = tuple(int(n) for n in shape[:3])
    out = [0, 0, 0]
    for axis, (target, _) in enumerate(transform):
        out[int(target)] = spatial[axis]
    return (out[0], out[1], out[2]), aff @ inv_ornt_aff(transform, spatial)


def back_from_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map a canonical ``(Z, H, W[, ...])`` array onto the voxel grid that ``affine`` describes.

    The same as :func:`from_canonical` for an input whose affine was ``affine``, when only the
    affine was kept (not the :class:`CanonicalVolume`): the orientation is recomputed from it.

    Returns:
        ``(I, J, K[, ...])`` such that ``nibabel.Nifti1Image(result, affine)`` overlays the input.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    ornt = _input_ornt(_check_affine(affine))
    back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), ornt)
    return np.ascontiguousarray(apply_orientation(np.asarray(array), back))


def inplane_note(spacing_mm: tuple[float, float, float], limit: float = 1.2) -> str | None:
    """A one-line note when the canonical pixels ``(y, x)`` of spacing ``(z, y, x)`` are far from square."""
    _, y, x = spacing_mm
    ratio = max(y, x) / min(y, x) if min(y, x) > 0 else float("inf")
    if ratio <= limit:
        return None
    return (
        f"the axial pixels are {y:.3g} x {x:.3g} mm (not square); the model sees them as square pixels, "
        "without resampling: expect lower accuracy"
    )
