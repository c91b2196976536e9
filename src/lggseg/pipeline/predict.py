"""Prediction on new scans: single slices, patient folders, folders of patients, NIfTI volumes.

For every input it writes, under ``out``:

* ``<case>/masks/<slice>_mask.png`` (0/255) and ``<case>/overlays/<slice>_overlay.png``;
* for a patient folder or a volume: ``<case>/<case>_mask.nii.gz`` and ``<case>/<case>_flair.nii.gz``
  (for a NIfTI input the mask reuses the input's affine and header, so it overlays it exactly);
* ``summary.csv``: one row per slice with its tumor area (pixels) and its patient's tumor volume
  (voxels), and the Dice against ground truth where masks are present.

Every input goes through :meth:`lggseg.infer.segmenter.Segmenter.segment`, so every mask has its
input's size: a single slice, and a patient folder whose slices share one size (its NIfTI then
has that size too). A patient folder whose slices have different sizes is read, predicted and
written on the 256x256 grid (:func:`lggseg.data.dataset.load_patient`).

Inputs: a slice file; a patient folder (files named ``<patient>_<n>.tif``); a folder of patient
folders and/or NIfTI volumes; or a folder of loose slice images (any names), each predicted as
its own slice. Hidden files (``.DS_Store``, ``._*``), ``*_mask`` images and files that are not
images or NIfTI inside a folder are ignored. A bad input (unreadable, corrupt, wrong shape) is
reported and skipped; the others are still processed (:class:`PredictReport` lists the
failures, and the CLI exits with status 2 when there is any).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lggseg.data.dataset import SLICE_NAME, index_dataset, load_patient
from lggseg.errors import LggsegError
from lggseg.evaluation import metrics, render
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic, nifti
from lggseg.io.images import display_path, read_image
from lggseg.io.progress import track

SUMMARY_FIELDS = [
    "case",
    "slice",
    "source",
    "tumor_area_px",
    "case_tumor_volume_voxels",
    "case_tumor_slices",
    "case_dice",
]
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class CaseResult:
    """What was predicted for one case (a slice, a patient or a volume)."""

    name: str
    mask: np.ndarray  # (Z, H, W) bool on the input's own grid
    sources: list[str]
    dice: float | None = None
    outputs: list[Path] = field(default_factory=list)
    images: np.ndarray | None = None  # (Z, H, W, 3) uint8 the mask was predicted from (patients)
    truth: np.ndarray | None = None  # (Z, H, W) bool ground truth, when the input had masks

    @property
    def volume(self) -> int:
        return int(self.mask.sum())


@dataclass
class PredictReport:
    cases: list[CaseResult]
    failures: list[str]
    summary_csv: Path | None


def write_case(out: Path, name: str, images: np.ndarray, mask: np.ndarray, slice_names: list[str]) -> list[Path]:
    """Per-slice mask and overlay PNGs for one case."""
    written = []
    for image, slice_mask, slice_name in zip(images, mask, slice_names):
        mask_path = out / name / "masks" / f"{slice_name}_mask.png"
        overlay_path = out / name / "overlays" / f"{slice_name}_overlay.png"
        render.save_png(slice_mask.astype(np.uint8) * 255, mask_path)
        render.save_png(render.overlay(image, slice_mask), overlay_path)
        written += [mask_path, overlay_path]
    return written


def predict_patient(segmenter: Segmenter, folder: Path, out: Path) -> CaseResult:
    """A patient folder: slices in order -> PNGs + NIfTI; Dice if masks are present."""
    index = index_dataset(folder)
    if len(index.patients) != 1:
        raise LggsegError(f"{display_path(folder)}: expected one patient folder")
    patient = index.patients[0]
    volume = load_patient(patient)  # the slices' own size, or the model grid when sizes differ
    images, truth = volume.images, volume.masks
    mask = segmenter.segment(images)
    names = [s.image.stem for s in patient.slices]
    outputs = write_case(out, patient.name, images, mask, names)
    for suffix, data in (("mask", mask.astype(np.uint8)), ("flair", images[..., 1])):
        path = out / patient.name / f"{patient.name}_{suffix}.nii.gz"
        nifti.save_volume(data, path)
        outputs.append(path)
    dice = metrics.dice(mask, truth) if truth is not None else None
    return CaseResult(patient.name, mask, [str(s.image) for s in patient.slices], dice, outputs, images, truth)


def predict_nifti(segmenter: Segmenter, path: Path, out: Path) -> CaseResult:
    """A NIfTI volume -> PNGs + a mask NIfTI with the input's affine and header."""
    images, reference = nifti.load_volume(path)
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    mask = segmenter.segment(images)
    outputs = write_case(out, name, images, mask, [f"{name}_{z + 1}" for z in range(len(images))])
    mask_path = out / name / f"{name}_mask.nii.gz"
    nifti.save_volume(mask.astype(np.uint8), mask_path, reference)
    return CaseResult(name, mask, [str(path)], None, outputs + [mask_path])


def predict_slice(segmenter: Segmenter, path: Path, out: Path, name: str | None = None) -> CaseResult:
    """One slice file, normalised with its own statistics; outputs are named ``name`` (default: the stem)."""
    name = name or path.stem
    image = read_image(path)
    mask = segmenter.segment(image[None])
    outputs = write_case(out, "slices", image[None], mask, [name])
    return CaseResult(name, mask, [str(path)], None, outputs)


def slice_output_names(jobs: list[tuple[str, Path]]) -> dict[Path, str]:
    """Output names of slice jobs: the stem, or ``<stem>_<ext>`` where two inputs share a stem."""
    stems = Counter(path.stem for kind, path in jobs if kind == "slice")
    return {
        path: path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        for kind, path in jobs
        if kind == "slice"
    }


def expand_inputs(inputs: list[str | Path]) -> tuple[list[tuple[str, Path]], list[str]]:
    """Classify inputs as ``slice``, ``patient`` or ``nifti`` jobs; report the unusable ones."""
    jobs: list[tuple[str, Path]] = []
    failures: list[str] = []
    for item in map(Path, inputs):
        if not item.exists():
            failures.append(f"{display_path(item)}: no such file or folder")
        elif item.is_file():
            if nifti.is_nifti(item):
                jobs.append(("nifti", item))
            elif item.suffix.lower() in IMAGE_SUFFIXES:
                if not item.stem.endswith("_mask"):
                    jobs.append(("slice", item))
            else:
                failures.append(
                    f"{display_path(item)}: not a slice image (.tif/.png/.jpg) or NIfTI volume (.nii/.nii.gz)"
                )
        else:
            files = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith("."))
            if any(SLICE_NAME.match(p.name) for p in files):
                jobs.append(("patient", item))
            else:
                subfolders = sorted(
                    p for p in item.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"
                )
                volumes = [p for p in files if nifti.is_nifti(p)]
                loose = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")]
                found = (
                    [("patient", p) for p in subfolders]
                    + [("nifti", p) for p in volumes]
                    + [("slice", p) for p in loose]
                )
                if not found:
                    failures.append(f"{display_path(item)}: no slice images, patient folders or NIfTI volumes inside")
                jobs += found
    return jobs, failures


def predict(
    inputs: list[str | Path],
    out: str | Path,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    segmenter: Segmenter | None = None,
    log: Callable[[str], None] = print,
) -> PredictReport:
    """Predict every input; write PNGs, NIfTI volumes and ``summary.csv`` under ``out``."""
    jobs, failures = expand_inputs(inputs)
    if not jobs:
        raise LggsegError(failures[0] if failures else "no inputs given")
    segmenter = segmenter or Segmenter.from_weights(weights, inference)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handlers: dict[str, Callable[[Segmenter, Path, Path], CaseResult]] = {
        "patient": predict_patient,
        "nifti": predict_nifti,
    }
    cases: list[CaseResult] = []
    slice_names = slice_output_names(jobs)
    for kind, path in track(jobs, description="predicting"):
        try:
            if kind == "slice":
                cases.append(predict_slice(segmenter, path, out, slice_names[path]))
            else:
                cases.append(handlers[kind](segmenter, path, out))
        except LggsegError as exc:
            failures.append(f"{exc} (skipped)")
    summary = None
    if cases:
        summary = out / "summary.csv"
        write_summary(cases, summary)
    for failure in failures:
        log(f"error: {failure}")
    return PredictReport(cases, failures, summary)


def write_summary(cases: list[CaseResult], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    for case in cases:
        sources = case.sources if len(case.sources) == len(case.mask) else case.sources * len(case.mask)
        slices_with_tumor = int(case.mask.reshape(len(case.mask), -1).any(1).sum())
        for z, (slice_mask, source) in enumerate(zip(case.mask, sources)):
            row: dict[str, Any] = {
                "case": case.name,
                "slice": z + 1,
                "source": source,
                "tumor_area_px": int(slice_mask.sum()),
                "case_tumor_volume_voxels": case.volume,
                "case_tumor_slices": slices_with_tumor,
                "case_dice": "" if case.dice is None else f"{case.dice:.4f}",
            }
            writer.writerow(row)
    atomic.write_text(path, buffer.getvalue())
