"""Prediction on new scans: slices, patient folders, NIfTI volumes, DICOM series, separate channel files.

What is accepted is described in :mod:`lggseg.pipeline.inputs`, how each input is read and oriented
in :mod:`lggseg.pipeline.cases`, what is written in :mod:`lggseg.pipeline.outputs`.

Every case goes through :meth:`lggseg.infer.segmenter.Segmenter.probabilities` and the weights'
post-processing (:func:`lggseg.infer.postprocess.apply`), with the threshold replaced when the
caller gives one. Cases are processed one at a time and dropped once written: memory does not grow
with the number of inputs. A bad input (unreadable, corrupt, wrong shape, too large) is reported
and skipped; the others are still processed, and ``summary.csv`` holds every finished case. A full
output disk stops the run (nothing later could be written). :class:`PredictReport` lists the
failures; the CLI then exits with status 2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from lggseg.data.dataset import flair_only_fill
from lggseg.errors import LggsegError
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.provenance import provenance_note
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io.images import display_path
from lggseg.model.bundle import PostProcess
from lggseg.pipeline.cases import Case, load_case
from lggseg.pipeline.inputs import Job, expand_inputs
from lggseg.pipeline.outputs import (
    SUMMARY_FIELDS,
    OutputError,
    SummaryWriter,
    check_out,
    remove_new_out,
    summary_rows,
    write_slice_case,
    write_volume_case,
)

__all__ = ["SUMMARY_FIELDS", "CaseResult", "CaseSummary", "PredictReport", "predict", "predict_patient"]

OWN_STATS_NOTE = (
    "note: single slices are normalised with their own intensity statistics; inside their patient folder "
    "they would use the whole volume's, and the mask can differ slightly (pass the patient folder for that)"
)


@dataclass
class CaseResult:
    """One case with its arrays (what :func:`predict_patient` returns to the demo)."""

    name: str
    mask: np.ndarray  # (Z, H, W) bool on the input's own grid
    sources: list[str]
    dice: float | None = None
    outputs: list[Path] = field(default_factory=list)
    images: np.ndarray | None = None  # (Z, H, W, 3) uint8 the mask was predicted from
    truth: np.ndarray | None = None  # (Z, H, W) bool ground truth, when the input had masks

    @property
    def volume(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class CaseSummary:
    """What is kept of a finished case (no arrays): enough for one line of output."""

    name: str
    kind: str
    voxels: int
    slices: int
    tumor_slices: int
    volume_ml: float | None
    area_mm2: float | None
    dice: float | None
    output: Path
    seconds: float
    dice_note: str | None = None  # whether the model saw this patient (a training patient's Dice is no test)

    @property
    def two_d(self) -> bool:
        return self.kind == "slice"

    def line(self) -> str:
        """``P: tumor volume 31227 voxels (28.40 mL) in 12 of 20 slices, Dice 0.900``; a slice gives its area."""
        if self.two_d:
            text = f"{self.name}: tumor area {self.voxels} pixels"
            text += f" ({self.area_mm2:.1f} mm2)" if self.area_mm2 is not None else ""
        else:
            text = f"{self.name}: tumor volume {self.voxels} voxels"
            text += f" ({self.volume_ml:.2f} mL)" if self.volume_ml is not None else ""
            text += f" in {self.tumor_slices} of {self.slices} slices"
        if self.dice is None:
            return text
        return text + f", Dice {self.dice:.3f}" + (f" ({self.dice_note})" if self.dice_note else "")


@dataclass
class PredictReport:
    cases: list[CaseSummary]
    failures: list[str]
    summary_csv: Path | None
    not_processed: int = 0  # inputs left when the run stopped early (the output disk is full)


class Reporter(Protocol):
    """Where progress goes: one call per finished or failed input, and free-standing notes."""

    def start(self, total: int) -> None: ...
    def done(self, case: CaseSummary) -> None: ...
    def failed(self, message: str) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


class LineReporter:
    """One plain line per finished input, ``[k/N] <case line>  (elapsed, ~left)``; errors via ``err``."""

    def __init__(self, log: Callable[[str], None] = print, err: Callable[[str], None] | None = None) -> None:
        self.log, self.err = log, err or log
        self.total = self.count = 0
        self.began = time.perf_counter()

    def start(self, total: int) -> None:
        self.total, self.began = total, time.perf_counter()

    def _prefix(self) -> str:
        self.count += 1
        return f"[{self.count}/{self.total}]" if self.total else ""

    def _timing(self) -> str:
        elapsed = time.perf_counter() - self.began
        left = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        return f"  ({format_seconds(elapsed)}" + (
            f", ~{format_seconds(left)} left)" if self.count < self.total else ")"
        )

    def done(self, case: CaseSummary) -> None:
        self.log(f"{self._prefix()} {case.line()}{self._timing()}")

    def failed(self, message: str) -> None:
        self.err(f"error: {message}  {self._prefix()}")

    def note(self, message: str) -> None:
        self.err(message)

    def close(self) -> None:
        return None


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> None:
    """Hand the heap pages freed by a finished case back to the kernel (glibc ``malloc_trim``).

    The torch backend switches glibc's own trimming off for speed
    (:func:`lggseg.infer.runtime.tune_malloc`); without this, the freed arrays of every case of a
    long batch stay resident and the process grows case after case. A no-op without glibc.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise LggsegError(f"--threshold must be a probability strictly between 0 and 1, got {threshold}")


def case_record(case: Case, segmenter: Segmenter, post: PostProcess, overridden: bool, **result: Any) -> dict[str, Any]:
    """The per-case JSON: what went in, how it was predicted, what came out."""
    import nibabel as nib

    job = case.job
    inputs = [str(p) for p in (job.pre, job.path, job.post) if p is not None]
    return {
        "case": case.name,
        "kind": job.kind,
        "inputs": inputs,
        "channels": case.channels,
        "grid": {
            "shape_zhw": list(case.images.shape[:3]),
            "orientation": "canonical: slices inferior->superior, rows anterior->posterior, columns right->left",
            "input_axcodes": "".join(str(c) for c in nib.aff2axcodes(case.grid.affine)) if case.grid else None,
            "spacing_mm_zyx": list(case.spacing_mm) if case.spacing_mm else None,
        },
        "weights_sha256": segmenter.bundle.sha256,
        "threshold": post.threshold,
        "threshold_from": "--threshold" if overridden else "weights",
        "post_processing": post.to_dict(),
        "warnings": list(case.warnings),
        **result,
    }


def run_case(
    case: Case, segmenter: Segmenter, post: PostProcess, out: Path, save_probabilities: bool, overridden: bool
) -> tuple[CaseSummary, list[dict[str, Any]]]:
    """Predict one loaded case and write its outputs; return its summary and its summary.csv rows."""
    began = time.perf_counter()
    prob = segmenter.probabilities(case.images)
    mask = postprocess.apply(prob, post)
    kept = prob if save_probabilities else None
    del prob
    dice = metrics.dice(mask, case.truth) if case.truth is not None else None
    dice_note = provenance_note(segmenter.bundle.info, case.name) if dice is not None else None
    voxels = int(mask.sum())
    volume_ml = voxels * case.voxel_ml if case.voxel_ml is not None else None
    area_mm2 = voxels * case.spacing_mm[1] * case.spacing_mm[2] if case.spacing_mm else None
    tumor_slices = int(mask.reshape(len(mask), -1).any(1).sum())
    record = case_record(
        case,
        segmenter,
        post,
        overridden,
        tumor={
            "voxels": voxels,
            "mm3": None if volume_ml is None else round(volume_ml * 1000, 3),
            "ml": None if volume_ml is None else round(volume_ml, 4),
            "area_mm2": None if area_mm2 is None or not case.two_d else round(area_mm2, 3),
            "slices_with_tumor": tumor_slices,
        },
        dice=dice,
        dice_note=dice_note,
        probabilities="float32 probabilities 0..1 on the input grid" if kept is not None else None,
    )
    if case.two_d:
        output = write_slice_case(out, case, mask, kept, record)
    else:
        output = write_volume_case(out, case, mask, kept, record)
    rows = summary_rows(case, mask, dice, post.threshold, dice_note)
    summary = CaseSummary(
        case.name,
        case.job.kind,
        voxels,
        len(mask),
        tumor_slices,
        volume_ml,
        area_mm2 if case.two_d else None,
        dice,
        output,
        time.perf_counter() - began,
        dice_note,
    )
    return summary, rows


def predict(
    inputs: list[str | Path],
    out: str | Path,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    segmenter: Segmenter | None = None,
    log: Callable[[str], None] = print,
    *,
    flair: str | Path | None = None,
    pre: str | Path | None = None,
    post: str | Path | None = None,
    spacing: tuple[float, float, float] | None = None,
    threshold: float | None = None,
    save_probabilities: bool = False,
    reporter: Reporter | None = None,
) -> PredictReport:
    """Predict every input; write each case's outputs and grow ``summary.csv`` under ``out`` as cases finish.

    ``flair``/``pre``/``post``: separate channel files of one more case (``pre``/``post`` optional).
    ``spacing``: ``(z, y, x)`` mm for slice images and patient folders. ``threshold``: replaces the
    weights' threshold (recorded in ``summary.csv`` and each case's JSON). ``reporter``: where
    progress goes (default: :class:`LineReporter` on ``log``).
    """
    check_threshold(threshold)
    as_path = lambda p: Path(p) if p is not None else None  # noqa: E731
    jobs, failures = expand_inputs(inputs, as_path(flair), as_path(pre), as_path(post))
    if not jobs:
        if len(failures) > 1:
            for failure in failures:
                log(f"error: {failure}")
            raise LggsegError(f"none of the {len(failures)} inputs can be used")
        raise LggsegError(failures[0] if failures else "no inputs given")
    out = Path(out)
    created = check_out(out, any(job.kind == "slice" for job in jobs))
    try:
        segmenter = segmenter or Segmenter.from_weights(weights, inference)
    except LggsegError:
        remove_new_out(created)  # unusable weights leave no empty folder behind
        raise
    rules = segmenter.bundle.post
    post_rules = dataclasses.replace(rules, threshold=float(threshold)) if threshold is not None else rules
    fill = flair_only_fill(segmenter.bundle.info)
    reporter = reporter or LineReporter(log)
    reporter.start(len(jobs) + len(failures))
    for failure in failures:
        reporter.failed(failure)
    summary = SummaryWriter(out / "summary.csv")
    finished: list[CaseSummary] = []
    not_processed, noted = 0, False
    try:
        for position, job in enumerate(jobs):
            result, warnings, error, fatal = _run_job(
                job, segmenter, post_rules, out, spacing, fill, save_probabilities, threshold, summary
            )
            release_memory()  # the case's arrays died with _run_job's frame
            for warning in warnings:
                reporter.note(warning)
            if result is not None:
                finished.append(result)
                if result.two_d and not noted:
                    reporter.note(OWN_STATS_NOTE)
                    noted = True
                reporter.done(result)
                continue
            failures.append(error)
            reporter.failed(error)
            if fatal:
                not_processed = len(jobs) - position - 1
                if not_processed:
                    reporter.note(f"error: stopped: {not_processed} input(s) not processed, the output disk is full")
                break
    finally:
        reporter.close()
    return PredictReport(finished, failures, summary.path if summary.started else None, not_processed)


def _run_job(
    job: Job,
    segmenter: Segmenter,
    post: PostProcess,
    out: Path,
    spacing: tuple[float, float, float] | None,
    fill: str,
    save_probabilities: bool,
    threshold: float | None,
    summary: SummaryWriter,
) -> tuple[CaseSummary | None, list[str], str, bool]:
    """One job end to end: (summary or None, warning lines, error line, fatal). Arrays die here."""
    warnings: list[str] = []
    try:
        case = load_case(job, spacing, fill)
        warnings = [f"warning: {case.name}: {w}" for w in case.warnings]
        result, rows = run_case(case, segmenter, post, out, save_probabilities, threshold is not None)
        del case
        summary.add(rows)
        return result, warnings, "", False
    except OutputError as exc:
        return None, warnings, str(exc), exc.fatal
    except LggsegError as exc:
        return None, warnings, f"{exc} (skipped)", False
    except MemoryError:
        return None, warnings, f"{display_path(job.path)}: not enough memory to process it (skipped)", False
    except OSError as exc:
        where = display_path(exc.filename or job.path)
        return None, warnings, f"{where}: {exc.strerror or exc} (skipped)", False


def predict_patient(segmenter: Segmenter, folder: Path, out: Path) -> CaseResult:
    """A patient folder: slices in order -> PNGs + NIfTI; Dice if masks are present (used by ``demo``)."""
    folder = Path(folder)
    case = load_case(Job("patient", folder, name=folder.name))
    mask = segmenter.segment(case.images)
    dice = metrics.dice(mask, case.truth) if case.truth is not None else None
    note = provenance_note(segmenter.bundle.info, case.name) if dice is not None else None
    post = segmenter.bundle.post
    record = case_record(case, segmenter, post, False, tumor={"voxels": int(mask.sum())}, dice=dice, dice_note=note)
    output = write_volume_case(Path(out), case, mask, None, record)
    return CaseResult(case.name, mask, case.sources, dice, [output], case.images, case.truth)
