"""What ``lggseg predict`` writes, and how: complete or absent, never half-written.

Under ``out``:

* a volume case (patient folder, NIfTI, DICOM series, channel files) is one folder ``<case>/``:
  ``masks/<slice>_mask.png`` (0/255), ``overlays/<slice>_overlay.png``, ``<case>_mask.nii.gz``
  (uint8 0/1), ``<case>.json`` (what was done: threshold, channels, spacing, volumes, Dice,
  warnings), for slice folders also ``<case>_flair.nii.gz``, for DICOM input also
  ``<case>_seg.dcm`` (a DICOM SEG referencing the series), and with ``--save-probabilities``
  ``<case>_probability.nii.gz`` (float32, 0..1). The folder is written under a hidden temporary
  name and renamed into place when complete; an earlier folder of the same name is replaced.
* single slices share ``slices/``: ``masks/``, ``overlays/``, ``probabilities/`` and
  ``<slice>.json``, each file written atomically (temporary file + rename); a slice whose files
  cannot all be written leaves none.
* ``summary.csv``: one row per slice. It is created (atomically) when the first case finishes and
  every later case's rows are appended in one write, then flushed to disk (``fsync``); a failed
  append is cut back, so the file always holds whole rows of finished cases.

Every OSError on ``out`` becomes an :class:`OutputError` naming the path; a full disk stops the run
(``fatal``), other write errors fail only their case.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lggseg.errors import LggsegError
from lggseg.evaluation import render
from lggseg.io import atomic, nifti
from lggseg.io.images import display_path

SUMMARY_FIELDS = [
    "case",
    "slice",
    "source",
    "tumor_area_px",
    "tumor_area_mm2",
    "case_tumor_volume_voxels",
    "case_tumor_volume_mm3",
    "case_tumor_volume_ml",
    "case_tumor_slices",
    "case_dice",
    "case_dice_note",
    "threshold",
    "channels",
]
_FATAL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}


class OutputError(LggsegError):
    """Writing under ``out`` failed; ``fatal`` when no later case could be written either (disk full)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def output_error(exc: OSError, path: str | Path | None = None) -> OutputError:
    """An OSError while writing -> one line naming the path (the file's, when the error knows it)."""
    target = exc.filename if exc.filename else path
    reason = exc.strerror or str(exc).splitlines()[0] or type(exc).__name__
    return OutputError(f"{display_path(str(target))}: cannot write ({reason})", fatal=exc.errno in _FATAL)


def check_out(out: Path, slices: bool) -> list[Path]:
    """Refuse an unusable output folder before any work: not a folder, not writable, or blocked names.

    Creates ``out`` and its missing parents, one at a time; returns the folders it created, the
    topmost first (for :func:`remove_new_out`).
    """
    if out.exists() and not out.is_dir():
        raise LggsegError(f"{display_path(out)}: exists and is not a folder; choose another --out")
    created: list[Path] = []
    try:
        for folder in (*reversed(out.parents), out):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".lggseg-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_new_out(created)
        raise LggsegError(f"{display_path(out)}: cannot write the output folder ({exc.strerror or exc})") from None
    summary = out / "summary.csv"
    if summary.exists() and not summary.is_file():
        raise LggsegError(f"{display_path(summary)}: exists and is not a regular file; move it or choose another --out")
    if slices and (out / "slices").exists() and not (out / "slices").is_dir():
        raise LggsegError(
            f"{display_path(out / 'slices')}: exists and is not a folder; move it or choose another --out"
        )
    return created


def remove_new_out(created: list[Path]) -> None:
    """Undo :func:`check_out` when the run stops before writing anything: remove the folders it
    created, deepest first, while they are empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def write_file(path: Path, data: bytes) -> None:
    """Write and flush one file inside a temporary case folder."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class CaseFolder:
    """``with CaseFolder(out, name) as tmp:`` write into ``tmp``; on success it becomes ``out/name``."""

    def __init__(self, out: Path, name: str) -> None:
        self.out, self.final = out, out / name
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the folder gets the usual permissions

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        try:
            if self.final.exists() or self.final.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.out))
                os.replace(self.final, old / "previous")
            os.replace(self.tmp, self.final)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise output_error(exc, self.final) from None
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


def slice_pngs(
    images: np.ndarray, mask: np.ndarray, truth: np.ndarray | None, names: list[str]
) -> Iterator[tuple[str, bytes, bytes]]:
    """(overlay name, mask PNG, labelled overlay PNG) per slice.

    images ``(Z, H, W, 3)`` uint8; mask/truth ``(Z, H, W)`` bool; overlay names have their slice
    numbers zero-padded so the files sort in slice order.
    """
    for z, padded in enumerate(render.padded_names(names)):
        overlay = render.labelled_overlay(images[z], mask[z], None if truth is None else truth[z], names[z])
        yield padded, render.png_bytes(mask[z].astype(np.uint8) * 255), render.png_bytes(overlay)


def write_volume_case(
    out: Path,
    case: Any,
    mask: np.ndarray,
    prob: np.ndarray | None,
    record: dict[str, Any],
) -> Path:
    """Write a volume case's folder (see the module docstring); return the folder."""
    name = case.name
    try:
        with CaseFolder(out, name) as tmp:
            (tmp / "masks").mkdir()
            (tmp / "overlays").mkdir()
            pngs = slice_pngs(case.images, mask, case.truth, case.slice_names)
            for slice_name, (padded, mask_png, overlay_png) in zip(case.slice_names, pngs):
                write_file(tmp / "masks" / f"{slice_name}_mask.png", mask_png)
                write_file(tmp / "overlays" / f"{padded}_overlay.png", overlay_png)
            files = [f"{name}_mask.nii.gz"]
            nifti.save_volume(mask.astype(np.uint8), tmp / files[0], case.grid, case.spacing_mm, "lggseg mask")
            if case.grid is None:  # a slice folder: its FLAIR as a volume the mask overlays
                files.append(f"{name}_flair.nii.gz")
                nifti.save_volume(case.images[..., 1], tmp / files[-1], None, case.spacing_mm, "lggseg FLAIR")
            if prob is not None:
                files.append(f"{name}_probability.nii.gz")
                nifti.save_volume(prob.astype(np.float32), tmp / files[-1], case.grid, case.spacing_mm, "probability")
            if case.series is not None:
                from lggseg.io import dicom
                from lggseg.io.orientation import back_from_canonical

                files.append(f"{name}_seg.dcm")
                dicom.write_seg(back_from_canonical(mask, case.grid.affine), case.series, tmp / files[-1])
            record["outputs"] = files + ["masks/", "overlays/", f"{name}.json"]
            write_file(tmp / f"{name}.json", json.dumps(record, indent=1).encode("utf-8"))
    except OSError as exc:
        raise output_error(exc, out / name) from None
    return out / name


def write_slice_case(out: Path, case: Any, mask: np.ndarray, prob: np.ndarray | None, record: dict[str, Any]) -> Path:
    """Write one single slice's files under ``out/slices`` (all of them, or none)."""
    folder = out / "slices"
    name = case.name
    _, mask_png, overlay_png = next(slice_pngs(case.images, mask, case.truth, [name]))
    targets: list[tuple[Path, Any]] = [
        (folder / "masks" / f"{name}_mask.png", mask_png),
        (folder / "overlays" / f"{name}_overlay.png", overlay_png),
    ]
    if prob is not None:
        targets.append((folder / "probabilities" / f"{name}_probability.nii.gz", prob.astype(np.float32)))
    targets.append((folder / f"{name}.json", None))
    record["outputs"] = [str(p.relative_to(out)) for p, _ in targets]
    targets[-1] = (targets[-1][0], json.dumps(record, indent=1).encode("utf-8"))
    done: list[Path] = []
    try:
        for path, payload in targets:
            if isinstance(payload, bytes):
                atomic.write_bytes(path, payload)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                nifti.save_volume(payload, path, None, case.spacing_mm, "probability")
            done.append(path)
    except OSError as exc:
        for path in done:
            path.unlink(missing_ok=True)
        raise output_error(exc, folder) from None
    return folder


class SummaryWriter:
    """``summary.csv``, grown case by case (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = False

    def add(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        if not self.started:
            writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        try:
            if not self.started:
                atomic.write_text(self.path, text)
                self.started = True
                return
            with open(self.path, "a", encoding="utf-8", newline="") as handle:
                size = handle.tell()
                try:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError:
                    handle.truncate(size)
                    raise
        except OSError as exc:
            error = output_error(exc, self.path)
            error.fatal = True  # a summary that misses finished cases would mislead
            raise error from None


def summary_rows(
    case: Any, mask: np.ndarray, dice: float | None, threshold: float, dice_note: str | None = None
) -> list[dict[str, Any]]:
    """One summary row per slice of ``case`` (mask ``(Z, H, W)`` bool); ``dice_note`` says whether
    the model saw the patient (:func:`lggseg.infer.provenance.provenance_note`)."""
    areas = mask.reshape(len(mask), -1).sum(1)
    voxels = int(areas.sum())
    spacing = case.spacing_mm
    pixel_mm2 = spacing[1] * spacing[2] if spacing else None
    sources = case.sources if len(case.sources) == len(mask) else case.sources * len(mask)
    common = {
        "case": case.name,
        "case_tumor_volume_voxels": voxels,
        "case_tumor_volume_mm3": "" if case.voxel_ml is None else f"{voxels * case.voxel_ml * 1000:.1f}",
        "case_tumor_volume_ml": "" if case.voxel_ml is None else f"{voxels * case.voxel_ml:.3f}",
        "case_tumor_slices": int((areas > 0).sum()),
        "case_dice": "" if dice is None else f"{dice:.4f}",
        "case_dice_note": "" if dice is None else (dice_note or ""),
        "threshold": f"{threshold:g}",
        "channels": case.channels,
    }
    return [
        {
            **common,
            "slice": number,
            "source": source,
            "tumor_area_px": int(area),
            "tumor_area_mm2": "" if pixel_mm2 is None else f"{int(area) * pixel_mm2:.1f}",
        }
        for number, source, area in zip(case.numbers, sources, areas)
    ]
