"""NIfTI volumes in and out, oriented by their affine.

Reading (:func:`read_scan`) checks before it decodes: the path must be a regular file (a FIFO or
``/dev/zero`` is never opened), and the voxel count x bytes the header declares must fit
:data:`lggseg.io.budget.MAX_DECODED_BYTES`, so a 50-byte ``.nii.gz`` that claims 2048^3 voxels costs
nothing. The voxels are then rescaled to uint8 (:func:`to_uint8`) in their stored order, one
channel at a time. :func:`lggseg.io.orientation.to_canonical` maps them with the image's affine
(sform, else qform, else nibabel's ANALYZE default) to the model's ``(Z, H, W)`` = (S, P, L).

Writing (:func:`save_volume`) takes a canonical ``(Z, H, W)`` volume and:

* with a ``reference`` (anything with ``.affine`` and ``.header``, e.g. the input scan), maps it
  back onto the reference's own voxel grid and saves it with the reference's affine and header,
  so the mask overlays the input in 3D Slicer and ITK-SNAP;
* without one (a slice-folder case), stores it as ``(W, H reversed, Z)``, i.e. LAS, with the
  affine ``diag(-x, y, z)`` from the spacing ``(z, y, x)`` in mm (1 mm when unknown): the image
  is upright in the axial view, patient left on the screen's right, and the world coordinates
  are right, so a mask written for a slice folder overlays that folder's FLAIR volume.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lggseg.errors import LggsegError
from lggseg.io.atomic import atomic_path
from lggseg.io.budget import check_decoded_bytes
from lggseg.io.orientation import CanonicalVolume, back_from_canonical, to_canonical

SUFFIXES = (".nii", ".nii.gz")
_UNIT_MM = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: str | Path) -> str:
    """``scan.nii.gz`` -> ``scan``; ``scan.nii`` -> ``scan``."""
    name = Path(path).name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def to_nifti_axes(volume: np.ndarray) -> np.ndarray:
    """Canonical ``(Z, H, W)`` -> ``(W, H reversed, Z)`` (the LAS layout of slice-folder outputs)."""
    return np.ascontiguousarray(np.flip(np.moveaxis(volume, (0, 1, 2), (2, 1, 0)), axis=1))


def from_nifti_axes(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_nifti_axes`: ``(W, H reversed, Z)`` -> ``(Z, H, W)``."""
    return np.ascontiguousarray(np.moveaxis(np.flip(data, axis=1), (2, 1, 0), (0, 1, 2)))


def slice_stack_affine(spacing_mm: tuple[float, float, float] | None = None) -> np.ndarray:
    """4x4 affine of :func:`to_nifti_axes` data: ``diag(-x, y, z, 1)`` for spacing ``(z, y, x)`` mm."""
    z, y, x = spacing_mm or (1.0, 1.0, 1.0)
    return np.diag([-float(x), float(y), float(z), 1.0])


def require_regular_file(path: Path, what: str = "file") -> None:
    """Refuse missing paths, folders and non-regular files (devices, FIFOs, sockets) without opening them."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise LggsegError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise LggsegError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise LggsegError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(mode):
        raise LggsegError(f"{path}: not a regular file (a device, FIFO or socket); refused")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class NiftiScan:
    """One NIfTI file, rescaled to uint8, in its stored voxel order.

    channels: 1 array (a 3D volume: FLAIR) or 3 (a 4D volume: pre-contrast, FLAIR, post-contrast),
        each ``(I, J, K)`` uint8 (see :func:`to_uint8`).
    affine: 4x4 voxel ``(i, j, k)`` -> RAS+ world, in the file's units.
    header: the nibabel header (for writing results with the same geometry).
    mm_per_unit: 1 for mm (or unknown units), 1000 for metres, 0.001 for microns.
    notes: one-line remarks about the geometry (no orientation in the header, a fallback affine).
    """

    path: Path
    channels: tuple[np.ndarray, ...]
    affine: np.ndarray
    header: Any
    mm_per_unit: float = 1.0
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.channels[0].shape)  # type: ignore[return-value]


def open_image(path: str | Path) -> Any:
    """The nibabel image of ``path`` with only its header read; refuses what would not fit the budget.

    The decoded size counted is voxels x (stored bytes + 4): the raw array and its float32 copy
    exist together while a channel is converted.
    """
    import nibabel as nib

    path = Path(path)
    require_regular_file(path, "NIfTI file")
    try:
        image: Any = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)
        itemsize = int(np.dtype(image.get_data_dtype()).itemsize)
    except OSError as exc:
        raise LggsegError(f"{path}: cannot read ({exc.strerror or _reason(exc)})") from None
    except Exception as exc:  # nibabel raises many types for a bad header
        raise LggsegError(f"{path}: cannot read NIfTI ({_reason(exc)})") from None
    if any(n < 0 for n in shape):
        raise LggsegError(f"{path}: the header declares a negative size {shape}")
    voxels = int(np.prod(shape, dtype=np.float64))
    check_decoded_bytes(voxels * (itemsize + 4), f"{path}: volume of shape {shape}")
    return image


def _best_affine(image: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """The image's affine; a non-finite or singular sform falls back to the qform, then the default."""
    header = image.header
    candidates: list[tuple[str, Any]] = []
    if int(header["sform_code"]) > 0:
        candidates.append(("sform", header.get_sform()))
    if int(header["qform_code"]) > 0:
        candidates.append(("qform", header.get_qform()))
    for name, affine in candidates:
        aff = np.asarray(affine, dtype=np.float64)
        if np.all(np.isfinite(aff)) and abs(np.linalg.det(aff[:3, :3])) > 1e-9:
            notes = () if name == candidates[0][0] else (f"the {candidates[0][0]} is unusable; used the {name}",)
            return aff, notes
    base = np.asarray(header.get_base_affine(), dtype=np.float64)
    if not candidates:
        return base, ("the header states no orientation (qform and sform codes 0): read as LAS (ANALYZE)",)
    return base, ("the header's affines are not finite or singular: read as LAS (ANALYZE) with its voxel sizes",)


def to_uint8(data: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 of the same shape (the model's input range).

    Integer values already within 0..255 (8-bit exports, the Kaggle slices written as NIfTI) are kept
    as they are. Anything else is rescaled linearly from ``min(0, minimum)`` to the 99.9th percentile
    of the voxels above that minimum (brighter voxels saturate at 255; NaN and infinities count as 0).
    The network normalises each channel by its own percentiles and z-score afterwards, so only
    the 8-bit quantisation of this step changes what it sees.
    """
    values = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 255 and np.array_equal(values, np.rint(values)):
        return values.astype(np.uint8)
    lo = min(0.0, lo)
    above = values[values > lo]
    top = float(np.percentile(above, 99.9)) if above.size else lo
    if top <= lo:
        return np.zeros(values.shape, np.uint8)
    values -= lo
    values *= 255.0 / (top - lo)
    np.clip(values, 0.0, 255.0, out=values)
    return np.rint(values).astype(np.uint8)


def read_scan(path: str | Path) -> NiftiScan:
    """Read a 3D (FLAIR) or 4D 3-channel (pre, FLAIR, post) NIfTI as uint8 channels in stored order."""
    path = Path(path)
    image = open_image(path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 5 and shape[3] == 1:  # NIfTI vector images: (I, J, K, 1, C)
        index: Callable[[int], tuple[Any, ...]] = lambda c: (slice(None),) * 3 + (0, c)  # noqa: E731
        n_channels = shape[4]
    elif len(shape) == 4:
        index, n_channels = (lambda c: (slice(None),) * 3 + (c,)), shape[3]
    elif len(shape) == 3:
        index, n_channels = (lambda c: (slice(None),) * 3), 1
    else:
        raise LggsegError(f"{path}: expected a 3D volume or 3 channels in a 4th axis, got shape {shape}")
    if n_channels not in (1, 3):
        raise LggsegError(
            f"{path}: {n_channels} channels in the 4th axis; expected 1 (FLAIR) or 3 (pre-contrast, FLAIR, "
            "post-contrast), or pass them as separate files with --pre/--flair/--post"
        )
    if min(shape[:3]) < 1:
        raise LggsegError(f"{path}: the volume is empty: shape {shape}")
    try:
        channels = tuple(to_uint8(np.asarray(image.dataobj[index(c)], dtype=np.float32)) for c in range(n_channels))
    except MemoryError:
        raise LggsegError(f"{path}: not enough memory to decode a volume of shape {shape}") from None
    except OSError as exc:
        raise LggsegError(f"{path}: cannot read NIfTI ({exc.strerror or _reason(exc)})") from None
    except Exception as exc:  # truncated or corrupt data
        raise LggsegError(f"{path}: cannot read NIfTI ({_reason(exc)})") from None
    affine, notes = _best_affine(image)
    units = image.header.get_xyzt_units()[0]
    return NiftiScan(path, channels, affine, image.header, _UNIT_MM.get(units, 1.0), notes)


@dataclass(frozen=True)
class NiftiReference:
    """What a result needs to be written back onto an input's grid: its affine and header."""

    affine: np.ndarray
    header: Any
    canonical: CanonicalVolume | None = None


def load_volume(
    path: str | Path, flair_only: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, NiftiReference]:
    """Read a NIfTI MRI as canonical ``(Z, H, W, 3)`` uint8 (S, P, L) plus its :class:`NiftiReference`.

    A 3D volume is FLAIR: ``flair_only`` (``(I, J, K)`` -> ``(I, J, K, 3)``) presents it to the network
    (default: FLAIR repeated in the 3 channels); ``lggseg predict`` passes
    :func:`lggseg.data.dataset.flair_only_images`. A 4D volume is (pre-contrast, FLAIR, post-contrast).
    """
    scan = read_scan(path)
    if len(scan.channels) == 1:
        flair = scan.channels[0]
        stack = flair_only(flair) if flair_only else np.repeat(flair[..., None], 3, axis=-1)
    else:
        stack = np.stack(scan.channels, axis=-1)
    canonical = to_canonical(stack, scan.affine)
    if min(canonical.array.shape[1:3]) < 8:
        raise LggsegError(f"{path}: slices of {canonical.array.shape[1:3]} voxels are too small (at least 8x8)")
    return canonical.array, NiftiReference(scan.affine, scan.header, canonical)


def save_volume(
    volume: np.ndarray,
    path: str | Path,
    reference: Any = None,
    spacing_mm: tuple[float, float, float] | None = None,
    description: str = "lggseg",
) -> None:
    """Write a canonical ``(Z, H, W)`` volume atomically (see the module docstring for the geometry).

    ``reference``: anything with ``.affine`` (4x4 voxel -> RAS+ mm) and ``.header`` (nibabel, or None for
    a grid without one, e.g. a DICOM series), such as a :class:`NiftiReference`; ``spacing_mm``:
    ``(z, y, x)``, used without a reference.
    """
    import nibabel as nib

    header = getattr(reference, "header", None)
    if reference is not None:
        affine = np.asarray(reference.affine, dtype=np.float64)
        data = back_from_canonical(volume, affine)
    else:
        affine, data = slice_stack_affine(spacing_mm), to_nifti_axes(volume)
    if header is not None:
        image = nib.Nifti1Image(data, affine, header.copy())
        image.set_data_dtype(data.dtype)
        image.header.set_slope_inter(1.0, 0.0)
        image.header.set_intent("none")
    else:  # a slice folder, or a DICOM series (its affine is already RAS+ mm)
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)  # scanner-anatomical in both forms: every reader agrees
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm")
    image.header["cal_min"] = 0
    image.header["cal_max"] = 1 if data.dtype != np.uint8 or int(data.max(initial=0)) <= 1 else 255
    image.header["descrip"] = description.encode("ascii", "replace")[:79]
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
