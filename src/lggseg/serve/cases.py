"""Turning uploads into cases: slices grouped per patient, zipped patient folders, NIfTI volumes.

A zipped patient folder is read by :func:`lggseg.data.dataset.load_patient`, as ``lggseg predict``
reads a folder; every case is then segmented by :meth:`lggseg.infer.segmenter.Segmenter.segment`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from lggseg.data.dataset import SLICE_NAME, index_dataset, load_patient
from lggseg.errors import LggsegError
from lggseg.io import nifti
from lggseg.io.images import image_from_bytes, mask_from_bytes
from lggseg.serve.limits import Budget, ServerLimits, reject
from lggseg.serve.uploads import Upload, extract_zip, image_size, sniff_upload


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


def _stem(label: str) -> str:
    return label.rsplit(".", 2)[0] if label.lower().endswith(".nii.gz") else label.rsplit(".", 1)[0]


def slice_cases(uploads: list[Upload], budget: Budget, warnings: list[str]) -> list[Case]:
    """Uploaded slice images -> cases: grouped per patient (``<patient>_<n>``) and image size."""
    groups: dict[tuple[str, tuple[int, int]], list[tuple[int, str, np.ndarray]]] = {}
    masks: dict[tuple[str, int], tuple[str, np.ndarray]] = {}
    order: list[Any] = []
    for upload in uploads:
        data = upload.path.read_bytes()
        width, height = image_size(data, upload.label)
        match = SLICE_NAME.match(upload.label)
        if match and match["mask"]:
            budget.check_slice(width, height, upload.label)
            masks[(match["prefix"], int(match["number"]))] = (upload.label, mask_from_bytes(data, upload.label))
            continue
        budget.check_slice(width, height, upload.label)
        image = image_from_bytes(data, upload.label)
        if match:
            key = (match["prefix"], image.shape[:2])
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((int(match["number"]), upload.label, image))
        else:
            order.append(Case(_stem(upload.label), "slice", image[None], [_stem(upload.label)], [upload.label]))
    cases: list[Case] = []
    used_masks: set[tuple[str, int]] = set()
    for item in order:
        if isinstance(item, Case):
            cases.append(item)
            continue
        prefix = item[0]
        members = sorted(groups[item], key=lambda m: m[0])
        numbers = [m[0] for m in members]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            reject(422, f"two files are slice {duplicates[0]} of {prefix}")
        budget.check_case(len(members), prefix)
        images = np.stack([m[2] for m in members])
        truth = None
        found = [masks.get((prefix, n)) for n in numbers]
        if all(f is not None for f in found):
            for (label, mask), image in zip(found, images):  # type: ignore[misc]
                if mask.shape != image.shape[:2]:
                    reject(
                        422,
                        f"{label}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{image.shape[1]}x{image.shape[0]}",
                    )
            truth = np.stack([f[1] for f in found])  # type: ignore[index]
            used_masks.update((prefix, n) for n in numbers)
        elif any(f is not None for f in found):
            warnings.append(
                f"{prefix}: masks for only {sum(f is not None for f in found)} of {len(found)} slices; no Dice computed"
            )
            used_masks.update((prefix, n) for n in numbers)
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
    voxel_size = tuple(z * scale for z in zooms) if scale and len(zooms) == 3 and all(z > 0 for z in zooms) else None
    keep = SimpleNamespace(affine=np.array(reference.affine), header=reference.header.copy())  # type: ignore[attr-defined]
    name = _stem(upload.label)
    names = [f"{name}_{z + 1}" for z in range(len(images))]
    return Case(name, "nifti", images, names, [upload.label], None, keep, voxel_size)  # type: ignore[arg-type]


def build_cases(uploads: list[Upload], folder: Path, limits: ServerLimits, warnings: list[str]) -> list[Case]:
    """Classify every upload by content and read it into cases (all limits checked on the way)."""
    budget = Budget(limits)
    kinds = []
    for upload in uploads:
        kind = sniff_upload(upload.path)
        if kind is None:
            reject(
                415,
                f"{upload.label}: not a TIFF, PNG or JPEG slice, a zip of a patient folder, or a NIfTI volume (judged "
                "by content)",
            )
        kinds.append(kind)
    cases: list[Case] = []
    images = [u for u, k in zip(uploads, kinds) if k == "image"]
    for position, (upload, kind) in enumerate(zip(uploads, kinds)):
        if kind == "zip":
            target = folder / f"zip{position}"
            target.mkdir()
            cases += zip_cases(upload, target, limits, budget, warnings)
        elif kind in ("nifti", "nifti-gz"):
            named = upload.path.with_name(upload.path.name + (".nii.gz" if kind == "nifti-gz" else ".nii"))
            upload.path.rename(named)
            upload.path = named
            cases.append(nifti_case(upload, budget))
    if images:
        cases = slice_cases(images, budget, warnings) + cases
    seen: collections.Counter[str] = collections.Counter()
    for case in cases:  # unique names: they become folder names in the zip download
        seen[case.name] += 1
        if seen[case.name] > 1:
            case.name = f"{case.name}-{seen[case.name]}"
    return cases
