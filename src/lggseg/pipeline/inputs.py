"""What ``lggseg predict`` accepts, and how each input becomes one canonical case for the network.

Inputs (:func:`expand_inputs`):

* a slice image (``.tif``/``.png``/``.jpg``); a ``<slice>_mask.<ext>`` beside it is its ground truth;
* a patient folder (``<patient>_<n>.tif`` files, as in kaggle_3m);
* a NIfTI volume: 3D = FLAIR, 4D with 3 components = (pre-contrast, FLAIR, post-contrast);
* a folder holding one DICOM series (FLAIR);
* a folder of any of the above (patient folders, DICOM series folders, NIfTI files, loose slices);
* separate channel files (``--pre``/``--flair``/``--post``: NIfTI files or DICOM series folders on
  one voxel grid).

Every case comes out in the model's canonical orientation (:mod:`lggseg.io.orientation`): NIfTI
and DICOM are permuted and flipped by their affine, never resampled. Paths that are not regular
files (devices, FIFOs, sockets) are refused without being opened.
"""

from __future__ import annotations

import stat
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lggseg.data.dataset import (
    SLICE_NAME,
)
from lggseg.errors import LggsegError
from lggseg.io import nifti
from lggseg.io.images import display_path

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
RESERVED_NAMES = ("slices",)
"""Output names that volume cases may not take (single slices share ``out/slices``)."""


@dataclass(frozen=True)
class Job:
    """One input to predict. kind: ``slice``, ``patient``, ``nifti``, ``dicom`` or ``channels``.

    For ``channels``, ``path`` is the FLAIR file and ``pre``/``post`` the other channels (or None).
    ``name`` is the unique output name (:func:`assign_names`).
    """

    kind: str
    path: Path
    pre: Path | None = None
    post: Path | None = None
    name: str = ""


def path_kind(path: Path) -> str:
    """``file``, ``folder``, ``missing`` or ``special`` (device, FIFO, socket), from ``stat`` only."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise LggsegError(f"{display_path(path)}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "special"


def is_dicom_file(path: Path) -> bool:
    """A regular file with the ``DICM`` marker at byte 128 (Part 10 files)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")
    except OSError as exc:
        raise LggsegError(f"{display_path(folder)}: cannot list the folder ({exc.strerror or exc})") from None


def _regular(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_file()]  # is_file: regular files only (follows links)


def _is_slice_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.lower().endswith("_mask")


def classify_folder(folder: Path) -> str | None:
    """``patient`` (slice files), ``dicom`` (a DICOM series) or None (a folder of other inputs)."""
    files = _regular(_listing(folder))
    if any(SLICE_NAME.match(p.name) for p in files):
        return "patient"
    if any(is_dicom_file(p) for p in files if not nifti.is_nifti(p) and p.suffix.lower() not in IMAGE_SUFFIXES):
        return "dicom"
    return None


def _file_job(item: Path) -> Job:
    if nifti.is_nifti(item):
        return Job("nifti", item)
    if item.suffix.lower() in IMAGE_SUFFIXES:
        if item.stem.lower().endswith("_mask"):
            image = item.with_name(item.stem[: -len("_mask")] + item.suffix)
            raise LggsegError(
                f"{display_path(item)}: a mask file is ground truth, not a scan; pass the image "
                f"({display_path(image.name)}): a mask beside it is used to report Dice"
            )
        return Job("slice", item)
    if is_dicom_file(item):
        raise LggsegError(f"{display_path(item)}: one DICOM file; pass the folder that holds the whole series")
    raise LggsegError(
        f"{display_path(item)}: not a slice image (.tif/.png/.jpg), NIfTI volume (.nii/.nii.gz) or DICOM series folder"
    )


def _folder_jobs(item: Path) -> list[Job]:
    kind = classify_folder(item)
    if kind is not None:
        return [Job(kind, item)]
    entries = _listing(item)
    subfolders = [p for p in entries if p.is_dir()]
    files = _regular(entries)
    found = [Job(classify_folder(p) or "patient", p) for p in subfolders]
    found += [Job("nifti", p) for p in files if nifti.is_nifti(p)]
    found += [Job("slice", p) for p in files if _is_slice_image(p)]
    if not found:
        raise LggsegError(
            f"{display_path(item)}: no slice images, patient folders, NIfTI volumes or DICOM series inside"
        )
    return found


def expand_inputs(
    inputs: list[str | Path], flair: Path | None = None, pre: Path | None = None, post: Path | None = None
) -> tuple[list[Job], list[str]]:
    """Classify the inputs into jobs; return them with one message per unusable input."""
    jobs: list[Job] = []
    failures: list[str] = []
    for item in map(Path, inputs):
        try:
            kind = path_kind(item)
            if kind == "missing":
                raise LggsegError(f"{display_path(item)}: no such file or folder")
            if kind == "special":
                raise LggsegError(f"{display_path(item)}: not a regular file (a device, FIFO or socket); refused")
            jobs += [_file_job(item)] if kind == "file" else _folder_jobs(item)
        except LggsegError as exc:
            failures.append(str(exc))
    if pre is not None or post is not None or flair is not None:
        if flair is None:
            failures.append("--pre and --post need --flair (the FLAIR file or DICOM series folder)")
        else:
            jobs.append(Job("channels", flair, pre, post))
    return assign_names(jobs), failures


def _base_name(job: Job, stems: Counter[str]) -> str:
    if job.kind == "slice":
        stem = job.path.stem
        return stem if stems[stem] == 1 else f"{stem}_{job.path.suffix.lstrip('.').lower()}"
    if job.kind in ("nifti", "channels") and nifti.is_nifti(job.path):
        return nifti.nifti_stem(job.path)
    return job.path.resolve().name or "input"


def assign_names(jobs: list[Job]) -> list[Job]:
    """Give every job a unique output name: its stem or folder name, then ``-2``, ``-3``... on clashes.

    Slices share ``out/slices`` and are named within it; volume cases are folders of ``out`` and
    never take a reserved name (``slices``).
    """
    stems = Counter(j.path.stem for j in jobs if j.kind == "slice")
    taken: dict[bool, set[str]] = {True: set(), False: set(RESERVED_NAMES)}
    named = []
    for job in jobs:
        base = _base_name(job, stems)
        used = taken[job.kind == "slice"]
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name.lower())
        named.append(replace(job, name=name))
    return named


def parse_spacing(text: str) -> tuple[float, float, float]:
    """``"3,0.94,0.94"`` -> ``(3.0, 0.94, 0.94)``: slice step, row and column spacing in mm."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(np.isfinite(v) and 0 < v < 1000 for v in values):
        raise LggsegError(f"--spacing must be three positive numbers in mm, Z,Y,X (e.g. 3,0.94,0.94), got {text!r}")
    return values[0], values[1], values[2]


__all__ = ["IMAGE_SUFFIXES", "Job", "assign_names", "classify_folder", "expand_inputs", "parse_spacing", "path_kind"]
