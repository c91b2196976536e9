"""Turning uploads into cases: slices grouped per patient, zipped patient folders, NIfTI volumes.

A zipped patient folder is read by :func:`lggseg.data.dataset.load_patient`, as ``lggseg predict``
reads a folder; every case is then segmented by :func:`segment_case`
(:meth:`lggseg.infer.segmenter.Segmenter.segment_with_probabilities`: the mask
:meth:`~lggseg.infer.segmenter.Segmenter.segment` gives, keeping the probabilities for the viewer).

A file that cannot be used (unknown type, unreadable, corrupt, unsafe zip) is recorded as a
:class:`FileProblem` and skipped, as ``lggseg predict`` skips a bad input; the request is refused
when no file at all could be used, and always for size limits (413).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Literal, TypeVar

import numpy as np
from fastapi import HTTPException

from lggseg.data.bundled import sample_root
from lggseg.data.dataset import SLICE_NAME, index_dataset, load_patient
from lggseg.errors import LggsegError
from lggseg.infer.segmenter import Segmenter
from lggseg.io import nifti
from lggseg.io.images import image_from_bytes, mask_from_bytes
from lggseg.serve.limits import Budget, ServerLimits, reject
from lggseg.serve.uploads import Upload, extract_zip, image_size, sniff_upload

KAGGLE_ORIENTATION = ("P", "L")
"""Direction of increasing row and column of a Kaggle slice: rows run anterior -> posterior, columns
patient right -> left (radiological display; see :mod:`lggseg.io.orientation`)."""

T = TypeVar("T")
REQUEST_LEVEL = (413, 503)
"""Statuses that refuse the whole request rather than skip one file: too large, busy."""


@dataclass
class Case:
    """A unit of segmentation: one slice, one patient's slices, or one volume."""

    name: str
    kind: Literal["slice", "slices", "patient", "nifti"]
    images: np.ndarray  # (Z, H, W, 3) uint8
    slice_names: list[str]
    sources: list[str]
    truth: np.ndarray | None = None  # (Z, H, W) bool
    reference: Any = None  # affine + header of a NIfTI input
    voxel_size: tuple[float, float, float] | None = None
    mask: np.ndarray | None = None  # (Z, H, W) bool, once segmented
    probability: np.ndarray | None = None  # (Z, H, W) float32 in [0, 1], once segmented
    orientation: tuple[str, str] | None = KAGGLE_ORIENTATION  # (row, column) direction codes; None: unknown


@dataclass(frozen=True)
class FileProblem:
    """An uploaded file that was skipped: its name, the HTTP status it alone would get, and why."""

    file: str
    status: int
    detail: str


def attempt(problems: list[FileProblem], label: str, work: Callable[[], T]) -> T | None:
    """``work()``, or None with a :class:`FileProblem` for ``label`` when the file is unusable.

    Refusals for size (413: the request, or one of its files, asks for more than the server gives)
    and for load (503) still refuse the whole request.
    """
    try:
        return work()
    except HTTPException as exc:
        if exc.status_code in REQUEST_LEVEL:
            raise
        problems.append(FileProblem(label, exc.status_code, str(exc.detail)))
    except LggsegError as exc:
        problems.append(FileProblem(label, 422, str(exc)))
    return None


def segment_case(segmenter: Segmenter, case: Case) -> None:
    """Set ``case.probability`` ``(Z, H, W)`` and ``case.mask``, the mask ``segmenter.segment`` gives."""
    case.probability, case.mask = segmenter.segment_with_probabilities(case.images)


def _stem(label: str) -> str:
    return label.rsplit(".", 2)[0] if label.lower().endswith(".nii.gz") else label.rsplit(".", 1)[0]


def slice_cases(uploads: list[Upload], budget: Budget, warnings: list[str], problems: list[FileProblem]) -> list[Case]:
    """Uploaded slice images -> cases: grouped per patient (``<patient>_<n>``) and image size."""
    groups: dict[tuple[str, tuple[int, int]], list[tuple[int, str, np.ndarray]]] = {}
    masks: dict[tuple[str, int], tuple[str, np.ndarray]] = {}
    order: list[Any] = []
    for upload in uploads:
        match = SLICE_NAME.match(upload.label)

        def read(upload: Upload = upload, is_mask: bool = bool(match and match["mask"])) -> np.ndarray:
            data = upload.path.read_bytes()
            width, height = image_size(data, upload.label)
            budget.check_slice(width, height, upload.label)
            return mask_from_bytes(data, upload.label) if is_mask else image_from_bytes(data, upload.label)

        pixels = attempt(problems, upload.label, read)
        if pixels is None:
            continue
        if match and match["mask"]:
            masks[(match["prefix"], int(match["number"]))] = (upload.label, pixels)
        elif match:
            key = (match["prefix"], pixels.shape[:2])
            if key not in groups:
                groups[key] = []
                order.append(key)
            number = int(match["number"])
            if any(m[0] == number for m in groups[key]):
                problems.append(FileProblem(upload.label, 422, f"{upload.label}: a second file for slice {number}"))
                continue
            groups[key].append((number, upload.label, pixels))
        else:
            order.append(Case(_stem(upload.label), "slice", pixels[None], [_stem(upload.label)], [upload.label]))
    cases: list[Case] = []
    used_masks: set[tuple[str, int]] = set()
    for item in order:
        if isinstance(item, Case):
            cases.append(item)
            continue
        prefix = item[0]
        members = sorted(groups[item], key=lambda m: m[0])
        budget.check_case(len(members), prefix)  # 413: refuses the request
        numbers = [m[0] for m in members]
        images = np.stack([m[2] for m in members])
        found: list[tuple[str, np.ndarray] | None] = []
        for number, image in zip(numbers, images):
            entry = masks.get((prefix, number))
            used_masks.add((prefix, number))
            if entry is not None and entry[1].shape != image.shape[:2]:
                label, mask = entry
                problems.append(
                    FileProblem(
                        label,
                        422,
                        f"{label}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{image.shape[1]}x{image.shape[0]}",
                    )
                )
                entry = None
            found.append(entry)
        truth = None
        if all(f is not None for f in found):
            truth = np.stack([f[1] for f in found if f is not None])
        elif any(f is not None for f in found):
            warnings.append(
                f"{prefix}: masks for only {sum(f is not None for f in found)} of {len(found)} slices; no Dice computed"
            )
        names = [_stem(m[1]) for m in members]
        kind: Literal["slice", "slices"] = "slices" if len(members) > 1 else "slice"
        cases.append(
            Case(prefix if len(members) > 1 else names[0], kind, images, names, [m[1] for m in members], truth)
        )
    for mask_key, (label, _) in masks.items():
        if mask_key not in used_masks:
            warnings.append(f"{label}: no image with this slice number was uploaded; mask ignored")
    return cases


def zip_cases(upload: Upload, folder: Path, limits: ServerLimits, budget: Budget, warnings: list[str]) -> list[Case]:
    """A zip of one patient folder (or several) -> one case per patient, read as ``lggseg predict`` does."""
    extract_zip(upload.path, folder, limits, upload.label)
    inside = f"{upload.label}: "
    try:
        index = index_dataset(folder)
        warnings.extend(relabel(problem, folder, inside) for problem in index.problems)
        cases = []
        for patient in index.patients:
            name = _stem(upload.label) if patient.folder == folder else patient.name
            budget.check_case(len(patient.slices), name)
            for item in patient.slices:
                for path in (item.image, item.mask):
                    if path is not None:
                        label = inside + str(path.relative_to(folder))
                        width, height = image_size(path.read_bytes(), label)
                        budget.check_slice(width, height, label)
            volume = load_patient(patient)  # own size, or the model grid when sizes differ (as `lggseg predict`)
            images, truth = volume.images, volume.masks
            names = [s.image.stem for s in patient.slices]
            sources = [str(s.image.relative_to(folder)) for s in patient.slices]
            cases.append(Case(name, "patient", images, names, sources, truth))
    except LggsegError as exc:
        raise LggsegError(relabel(str(exc), folder, inside)) from None
    return cases


def relabel(message: str, folder: Path, label: str) -> str:
    """Replace a temporary path in a library message by what the client knows it as."""
    for prefix in sorted({str(folder.resolve()), str(folder)}, key=len, reverse=True):
        message = message.replace(prefix + "/", label).replace(prefix, label.rstrip(": ") or ".")
    return message


def nifti_orientation(header: Any, affine: np.ndarray) -> tuple[str, str] | None:
    """(row, column) direction codes of a NIfTI case's slices, or None when they are only assumed.

    :func:`lggseg.io.nifti.load_volume` reorients every volume to the canonical (S, P, L) by its
    affine, so rows run anterior -> posterior and columns right -> left, unless the header declares
    no orientation (``qform_code`` and ``sform_code`` both 0) or its affine is not usable; then the
    reader assumes one, and the viewer shows no markers.
    """
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return None
    return KAGGLE_ORIENTATION


def nifti_case(upload: Upload, budget: Budget) -> Case:
    """A NIfTI volume: its header is checked before the data is read."""
    import nibabel as nib

    try:
        header_only: Any = nib.load(str(upload.path))
        shape = tuple(int(s) for s in header_only.shape)
        zooms = tuple(float(z) for z in header_only.header.get_zooms()[:3])
        units = header_only.header.get_xyzt_units()[0]
    except Exception as exc:  # nibabel raises many types for bad headers
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reject(422, f"{upload.label}: cannot read NIfTI header ({reason})")
    if len(shape) >= 3:
        width, height, depth = shape[:3]
        side = budget.limits.max_image_side
        if width > side or height > side:
            reject(413, f"{upload.label}: slices of {width}x{height} voxels are larger than the {side}x{side} limit")
        budget.check_case(depth, upload.label)
        budget.take(width * height * depth, upload.label)
    elements = int(np.prod(shape, dtype=np.float64))
    if elements > 3 * budget.limits.max_voxels:
        reject(413, f"{upload.label}: volume of shape {shape} holds more than {budget.limits.max_voxels} voxels")
    try:
        images, reference = nifti.load_volume(upload.path)
    except LggsegError as exc:
        raise LggsegError(str(exc).replace(str(upload.path), upload.label)) from None
    scale = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}.get(units)
    voxel_size: tuple[float, float, float] | None = None
    canonical = getattr(reference, "canonical", None)
    if canonical is not None and scale:  # (x, y, z) of the canonical slices: columns, rows, slice axis
        z_mm, y_mm, x_mm = (float(v) * scale for v in canonical.spacing_mm)
        voxel_size = (x_mm, y_mm, z_mm)
    elif scale and len(zooms) == 3 and all(z > 0 for z in zooms):
        voxel_size = (zooms[0] * scale, zooms[1] * scale, zooms[2] * scale)
    keep = SimpleNamespace(affine=np.array(reference.affine), header=reference.header.copy())
    name = _stem(upload.label)
    names = [f"{name}_{z + 1}" for z in range(len(images))]
    case = Case(name, "nifti", images, names, [upload.label], None, keep, voxel_size)
    case.orientation = nifti_orientation(keep.header, keep.affine)
    return case


def build_cases(
    uploads: list[Upload],
    folder: Path,
    limits: ServerLimits,
    warnings: list[str],
    problems: list[FileProblem] | None = None,
) -> list[Case]:
    """Classify every upload by content and read it into cases (all limits checked on the way).

    A file that cannot be used is added to ``problems`` and skipped; when no case is left, the
    request is refused with the first problem's status and every problem's message.
    """
    problems = [] if problems is None else problems
    budget = Budget(limits)
    cases: list[Case] = []
    images: list[Upload] = []
    for position, upload in enumerate(uploads):
        kind = sniff_upload(upload.path)
        if kind is None:
            detail = (
                f"{upload.label}: not a TIFF, PNG or JPEG slice, a zip of a patient folder, or a NIfTI volume (judged "
                "by content)"
            )
            problems.append(FileProblem(upload.label, 415, detail))
        elif kind == "image":
            images.append(upload)
        elif kind == "zip":
            target = folder / f"zip{position}"
            target.mkdir()
            found = attempt(problems, upload.label, partial(zip_cases, upload, target, limits, budget, warnings))
            cases += found or []
        else:
            named = upload.path.with_name(upload.path.name + (".nii.gz" if kind == "nifti-gz" else ".nii"))
            upload.path.rename(named)
            upload.path = named
            volume = attempt(problems, upload.label, partial(nifti_case, upload, budget))
            cases += [volume] if volume is not None else []
    if images:
        cases = slice_cases(images, budget, warnings, problems) + cases
    if not cases and problems:
        problems = [FileProblem(p.file, p.status, relabel(p.detail, folder, "")) for p in problems]
        reject(problems[0].status, "; ".join(p.detail for p in problems))
    seen: collections.Counter[str] = collections.Counter()
    for case in cases:  # unique names: they become folder names in the zip download
        seen[case.name] += 1
        if seen[case.name] > 1:
            case.name = f"{case.name}-{seen[case.name]}"
    return cases


def sample_uploads(patient: str | None = None) -> list[Upload]:
    """The bundled sample patient's slice and mask files as uploads (read in place, never modified).

    ``patient``: a folder name under :func:`lggseg.data.bundled.sample_root`; None: the first one.
    """
    folders = sorted(p for p in sample_root().iterdir() if p.is_dir())
    names = [p.name for p in folders]
    if patient is not None and patient not in names:
        reject(404, f"no sample patient {patient!r}; the sample holds {', '.join(names)}")
    folder = folders[names.index(patient) if patient is not None else 0]
    files = sorted(p for p in folder.iterdir() if SLICE_NAME.match(p.name))
    return [Upload(p.name, p, p.stat().st_size) for p in files]
