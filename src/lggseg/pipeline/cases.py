"""Reading one predict input into a canonical :class:`Case` for the network.

Every case comes out in the model's canonical orientation (:mod:`lggseg.io.orientation`): NIfTI
and DICOM volumes are permuted and flipped by their affine, never resampled; slice images and
patient folders already are the canonical slice stack. A FLAIR-only volume is presented to the
network by :func:`lggseg.data.dataset.flair_only_images`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.data.dataset import FLAIR_ONLY_FILL, compose_channels, index_dataset, load_patient, slice_number
from lggseg.errors import LggsegError
from lggseg.io import nifti
from lggseg.io.images import display_path, read_image, read_mask
from lggseg.io.orientation import (
    back_from_canonical,
    canonical_grid,
    inplane_note,
    orientation_warning,
    to_canonical,
)
from lggseg.pipeline.inputs import Job, path_kind


@dataclass(frozen=True)
class Grid:
    """Where a volume case's NIfTI outputs go: the input's affine, and its header when it had one."""

    affine: np.ndarray
    header: Any = None


@dataclass
class Case:
    """One input, read and oriented, ready for the network.

    images: ``(Z, H, W, 3)`` uint8, canonical (slices inferior -> superior, rows anterior -> posterior,
        columns patient right -> left); channels (pre-contrast, FLAIR, post-contrast).
    truth: ``(Z, H, W)`` bool ground truth, or None.
    numbers / slice_names: one per slice (the input's own slice numbers where it has them).
    sources: the input file of each slice (or one entry for the whole case).
    spacing_mm: voxel size ``(z, y, x)`` in mm when known (NIfTI, DICOM, ``--spacing``), else None.
    grid: NIfTI/DICOM inputs: the input's own grid (masks are written back onto it); None for slices.
    series: the DICOM :class:`~lggseg.io.dicom.SeriesInfo` the SEG must reference, or None.
    """

    job: Job
    images: np.ndarray
    truth: np.ndarray | None
    numbers: list[int]
    slice_names: list[str]
    sources: list[str]
    channels: str = "pre-contrast, FLAIR, post-contrast"
    spacing_mm: tuple[float, float, float] | None = None
    voxel_ml: float | None = None
    grid: Grid | None = None
    series: Any = None
    warnings: list[str] = field(default_factory=list)
    own_stats: bool = False  # a single slice, normalised with its own statistics

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def two_d(self) -> bool:
        return self.job.kind == "slice"


def _mask_beside(path: Path) -> Path | None:
    for suffix in dict.fromkeys((path.suffix, ".tif", ".tiff", ".png")):
        candidate = path.with_name(f"{path.stem}_mask{suffix}")
        if candidate.is_file():
            return candidate
    return None


def load_slice(job: Job, spacing: tuple[float, float, float] | None) -> Case:
    """A single slice image; its ``_mask`` beside it (same size) is its ground truth."""
    image = read_image(job.path)
    truth, warnings = None, []
    mask_path = _mask_beside(job.path)
    if mask_path is not None:
        mask = read_mask(mask_path)
        if mask.shape == image.shape[:2]:
            truth = mask[None]
        else:
            warnings.append(f"{display_path(mask_path)} is not the size of its image; no Dice reported")
    number = slice_number(job.path.name) or 1
    case = Case(job, image[None], truth, [number], [job.name], [str(job.path)], spacing_mm=spacing)
    case.own_stats, case.warnings = True, warnings
    return case


def load_patient_folder(job: Job, spacing: tuple[float, float, float] | None) -> Case:
    """A kaggle_3m-style patient folder (slices at their own size when they share one)."""
    index = index_dataset(job.path)
    if len(index.patients) != 1:
        raise LggsegError(f"{display_path(job.path)}: expected one patient folder")
    patient = index.patients[0]
    volume = load_patient(patient)
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing else None
    return Case(
        job,
        volume.images,
        volume.masks,
        list(volume.numbers),
        [s.image.stem for s in patient.slices],
        [str(s.image) for s in patient.slices],
        spacing_mm=spacing,
        voxel_ml=voxel_ml,
        warnings=list(index.problems),
    )


def _read_dicom(folder: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    try:
        from lggseg.io import dicom
    except ImportError:  # pragma: no cover - the module itself imports nothing optional
        raise LggsegError("DICOM input needs pydicom and highdicom: pip install 'lggseg[dicom]'") from None
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise LggsegError(
            f"{display_path(folder)}: DICOM input needs pydicom and highdicom: pip install 'lggseg[dicom]'"
        ) from None
    try:
        volume, affine, info = dicom.read_series(folder)
    except LggsegError as exc:
        message = str(exc)
        raise LggsegError(message if str(folder) in message else f"{display_path(folder)}: {message}") from None
    except OSError as exc:
        raise LggsegError(f"{display_path(folder)}: cannot read the DICOM series ({exc.strerror or exc})") from None
    except Exception as exc:  # malformed headers raise many types inside pydicom
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{display_path(folder)}: cannot read the DICOM series ({reason})") from None
    return nifti.to_uint8(volume), affine, info


def _single_channel(path: Path, role: str) -> tuple[np.ndarray, np.ndarray, float, Any, Any, tuple[str, ...]]:
    """One channel file: (data (I, J, K) uint8, affine, mm per unit, header or None, series or None, notes)."""
    kind = path_kind(path)
    if kind == "folder":
        data, affine, info = _read_dicom(path)
        return data, affine, 1.0, None, info, ()
    if kind != "file":
        what = "no such file or folder" if kind == "missing" else "not a regular file (a device, FIFO or socket)"
        raise LggsegError(f"{display_path(path)} ({role}): {what}")
    if not nifti.is_nifti(path):
        raise LggsegError(f"{display_path(path)} ({role}): expected a NIfTI file or a DICOM series folder")
    scan = nifti.read_scan(path)
    if len(scan.channels) != 1:
        raise LggsegError(f"{display_path(path)} ({role}): holds {len(scan.channels)} channels; expected one")
    return scan.channels[0], scan.affine, scan.mm_per_unit, scan.header, None, scan.notes


def same_grid(
    flair: tuple[tuple[int, ...], np.ndarray], other: tuple[tuple[int, ...], np.ndarray], labels: str
) -> None:
    """Refuse two channels on different voxel grids: compared in the canonical orientation, so the same
    grid stored in another voxel order passes; the affines may differ by 0.01 mm at most."""
    (shape_a, aff_a), (shape_b, aff_b) = canonical_grid(*flair), canonical_grid(*other)
    hint = "resample them onto the FLAIR's grid first (e.g. 3D Slicer's Resample Scalar Volume, or ANTs)"
    if shape_a != shape_b:
        raise LggsegError(f"{labels} are not on one grid: {shape_a} and {shape_b} voxels (Z, H, W); {hint}")
    diff = float(np.abs(aff_a - aff_b).max())
    if diff > 1e-2:
        raise LggsegError(f"{labels} are not on one grid: their affines differ by up to {diff:.3g} mm; {hint}")


def _volume_case(
    job: Job,
    pre: np.ndarray | None,
    flair: np.ndarray,
    post: np.ndarray | None,
    affine: np.ndarray,
    mm_per_unit: float,
    grid: Grid,
    series: Any = None,
    notes: tuple[str, ...] = (),
    fill: str = FLAIR_ONLY_FILL,
) -> Case:
    stack, channels = compose_channels(pre, flair, post, fill)
    del pre, flair, post
    canonical = to_canonical(stack, affine)
    del stack
    images = canonical.array
    if min(images.shape[1:3]) < 8:
        raise LggsegError(f"{display_path(job.path)}: axial slices of {images.shape[1:3]} voxels are too small")
    spacing = tuple(float(s) * mm_per_unit for s in canonical.spacing_mm)
    warnings = list(notes)
    for message in (orientation_warning(affine), inplane_note(spacing)):  # type: ignore[arg-type]
        if message:
            warnings.append(message)
    z = images.shape[0]
    return Case(
        job,
        images,
        None,
        list(range(1, z + 1)),
        [f"{job.name}_{k}" for k in range(1, z + 1)],
        [str(job.path)],
        channels=channels,
        spacing_mm=spacing,  # type: ignore[arg-type]
        voxel_ml=canonical.voxel_volume_ml * mm_per_unit**3,
        grid=grid,
        series=series,
        warnings=warnings,
    )


def load_nifti(job: Job, fill: str = FLAIR_ONLY_FILL) -> Case:
    """A NIfTI file: 3D = FLAIR only, 4D = the 3 channels; oriented by its affine."""
    scan = nifti.read_scan(job.path)
    pre, flair, post = (None, scan.channels[0], None) if len(scan.channels) == 1 else scan.channels
    grid = Grid(scan.affine, scan.header)
    return _volume_case(job, pre, flair, post, scan.affine, scan.mm_per_unit, grid, None, scan.notes, fill)


def load_dicom(job: Job, fill: str = FLAIR_ONLY_FILL) -> Case:
    """A folder holding one DICOM series, taken as FLAIR."""
    flair, affine, info = _read_dicom(job.path)
    skipped = (f"{len(info.skipped)} file(s) that are not DICOM images were ignored",) if info.skipped else ()
    return _volume_case(job, None, flair, None, affine, 1.0, Grid(affine), info, skipped, fill)


def load_channels(job: Job, fill: str = FLAIR_ONLY_FILL) -> Case:
    """``--pre``/``--flair``/``--post`` files: one voxel grid, checked; outputs on the FLAIR's grid."""
    flair, affine, mm, header, series, notes = _single_channel(job.path, "FLAIR")
    others: list[np.ndarray | None] = []
    for path, role in ((job.pre, "pre-contrast"), (job.post, "post-contrast")):
        if path is None:
            others.append(None)
            continue
        data, other_affine, _, _, _, _ = _single_channel(path, role)
        labels = f"{display_path(job.path)} (FLAIR) and {display_path(path)} ({role})"
        same_grid((flair.shape, affine), (data.shape, other_affine), labels)
        if data.shape != flair.shape or not np.allclose(other_affine, affine, rtol=0, atol=1e-2):
            data = back_from_canonical(to_canonical(data, other_affine).array, affine)  # into the FLAIR's order
        others.append(data)
    grid = Grid(affine, header)
    return _volume_case(job, others[0], flair, others[1], affine, mm, grid, series, notes, fill)


def load_case(job: Job, spacing: tuple[float, float, float] | None = None, fill: str = FLAIR_ONLY_FILL) -> Case:
    """Read one job into a :class:`Case`.

    ``spacing`` (``(z, y, x)`` mm) applies to slice images and patient folders (NIfTI and DICOM carry
    their own); ``fill`` is how a FLAIR-only volume is presented (:func:`~lggseg.data.dataset.flair_only_images`).
    """
    if job.kind == "slice":
        return load_slice(job, spacing)
    if job.kind == "patient":
        return load_patient_folder(job, spacing)
    if job.kind == "nifti":
        return load_nifti(job, fill)
    if job.kind == "dicom":
        return load_dicom(job, fill)
    if job.kind == "channels":
        return load_channels(job, fill)
    raise LggsegError(f"internal error: unknown input kind {job.kind!r}")
