"""The service behind the routes: the model, the limits, the gates and the result store.

Work is bounded twice: :meth:`Service.analyse` refuses, before anything is decoded, a request whose
files ask for more slices, cases or decoded NIfTI memory than one request may (counted from file
names and headers), and checks the exact numbers again once the cases are read, before the model
runs. Downloads are built one at a time on their own gate (``download_workers``), from the
bit-packed masks one slice at a time, so many concurrent downloads cannot pile up memory.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from lggseg.data.dataset import SLICE_NAME
from lggseg.errors import LggsegError
from lggseg.evaluation import metrics
from lggseg.evaluation.render import overlay, png_base64, png_bytes, probability_image
from lggseg.infer.provenance import provenance_note
from lggseg.infer.segmenter import Segmenter
from lggseg.io import nifti
from lggseg.serve.cases import Case, FileProblem, build_cases, relabel, segment_case
from lggseg.serve.limits import Gate, ServerLimits, check_work, megabytes, reject
from lggseg.serve.schemas import (
    CaseDownloads,
    CaseOut,
    CohortBox,
    SegmentOut,
    ShapeFeature,
    ShapeOut,
    SkippedFile,
    SliceOut,
)
from lggseg.serve.store import ResultStore, StoredCase
from lggseg.serve.uploads import Upload, nifti_header_shape, safe_name, sniff_upload
from lggseg.shape.cohort import COHORT_FEATURES, case_shape, load_cohort
from lggseg.version import __version__


class Service:
    """The model, the limits, the gate and the result store behind the routes."""

    def __init__(self, segmenter: Segmenter, limits: ServerLimits) -> None:
        self.segmenter = segmenter
        self.runtime = segmenter.config.runtime
        self.limits = limits
        self.gate = Gate(limits.workers, limits.queue)
        self.downloads = Gate(limits.download_workers, limits.download_queue, "lggseg-download", "downloads")
        self.store = ResultStore(limits.max_results, limits.max_result_bytes)

    def health(self) -> dict[str, Any]:
        bundle = self.segmenter.bundle
        return {
            "status": "ok",
            "ready": True,
            "version": __version__,
            "runtime": self.runtime,
            "inference": asdict(self.segmenter.config),
            "model": {
                "sha256": bundle.sha256,
                "architecture": "U-Net",
                "networks": len(self.segmenter.members),  # > 1: an ensemble, averaged
                "postprocess": bundle.post.to_dict(),
                "info": bundle.info,
                "weights_file": bundle.path.name if bundle.path else None,
                "members": [
                    {
                        "sha256": member.sha256,
                        "config": member.config.to_dict(),
                        "tta": member.tta,
                        "weights_file": member.path.name if member.path else None,
                    }
                    for member, _backend in self.segmenter.members
                ],
            },
            "limits": {k: v for k, v in asdict(self.limits).items() if k != "temp_dir"},
            "load": {
                "admitted": self.gate.admitted,
                "running": self.gate.running,
                "receiving": self.gate.receiving,
                "downloads": self.downloads.admitted,
            },
        }

    def analyse(self, uploads: list[Upload], folder: Path, include_images: bool) -> SegmentOut:
        """Read, segment and summarise (runs in a worker thread, inside the gate)."""
        began = time.perf_counter()
        warnings: list[str] = []
        problems: list[FileProblem] = []
        self.check_request(uploads)
        try:
            cases = build_cases(uploads, folder, self.limits, warnings, problems)
            if not cases:
                said = "; ".join(relabel(w, folder, "") for w in warnings)
                reject(400, f"nothing to segment: {said or 'no images'}")
            check_work(sum(len(case.images) for case in cases), len(cases), self.limits)
            for case in cases:
                segment_case(self.segmenter, case)  # case.mask is what segmenter.segment gives
        except LggsegError as exc:
            reject(422, relabel(str(exc), folder, ""))
        result_id = self.store.put(cases)
        base = f"/api/v1/results/{result_id}"
        out = [self._case_out(case, position, base, include_images, warnings) for position, case in enumerate(cases)]
        return SegmentOut(
            result_id=result_id,
            model_sha256=self.segmenter.bundle.sha256,
            runtime=self.runtime,
            seconds=round(time.perf_counter() - began, 4),
            png_zip=f"{base}/mask.zip",
            cases=out,
            warnings=[relabel(w, folder, "") for w in warnings],
            skipped=[SkippedFile(file=p.file, status=p.status, detail=relabel(p.detail, folder, "")) for p in problems],
        )

    def check_request(self, uploads: list[Upload]) -> None:
        """Refuse, from names and headers only, a request that asks for too much work or memory (413).

        Counted: each image that is not a ground-truth mask is a slice, and a case unless named
        ``<patient>_<n>`` (one case per patient); a NIfTI volume is a case of ``K`` slices whose
        decoded size is voxels x (stored bytes + 16): the raw values and the float32 working copies
        of one channel. Zips are counted once read (:func:`~lggseg.serve.limits.check_work`).
        """
        slices = cases = decoded = 0
        patients: set[str] = set()
        for upload in uploads:
            kind = sniff_upload(upload.path)
            if kind == "image":
                match = SLICE_NAME.match(upload.label)
                if match and match["mask"]:
                    continue
                slices += 1
                if match:
                    patients.add(match["prefix"])
                else:
                    cases += 1
            elif kind in ("nifti", "nifti-gz"):
                found = nifti_header_shape(upload.path, kind == "nifti-gz")
                if found is None:  # unreadable header: the reader says why
                    continue
                shape, itemsize = found
                slices += shape[2] if len(shape) >= 3 else 1
                cases += 1
                need = math.prod(shape) * (itemsize + 16)
                decoded += need
                if decoded > self.limits.max_decoded_bytes:
                    reject(
                        413,
                        f"{upload.label}: a volume of shape {tuple(shape)} needs {megabytes(need)} to decode; one "
                        f"request may use {megabytes(self.limits.max_decoded_bytes)}",
                    )
        check_work(slices, cases + len(patients), self.limits, exact=False)

    def _case_out(self, case: Case, position: int, base: str, include_images: bool, warnings: list[str]) -> CaseOut:
        mask = case.mask
        assert mask is not None
        areas = mask.reshape(len(mask), -1).sum(1)
        slices = []
        for z, (image, slice_mask, name) in enumerate(zip(case.images, mask, case.slice_names)):
            truth = case.truth[z] if case.truth is not None else None
            item = SliceOut(
                index=z + 1,
                name=name,
                tumor_area_px=int(areas[z]),
                truth_area_px=int(truth.sum()) if truth is not None else None,
                mask_png=png_base64(slice_mask.astype(np.uint8) * 255),
                flair_png=None,
                overlay_png=None,
                truth_png=png_base64(truth.astype(np.uint8) * 255) if truth is not None else None,
                probability_png=None,
            )
            if include_images:
                item.flair_png = png_base64(np.ascontiguousarray(image[..., 1]))
                item.overlay_png = png_base64(overlay(image, slice_mask, truth))
                if case.probability is not None:
                    item.probability_png = png_base64(probability_image(case.probability[z]))
            slices.append(item)
        volume = int(areas.sum())
        ml = volume * float(np.prod(case.voxel_size)) / 1000.0 if case.voxel_size else None
        return CaseOut(
            name=case.name,
            kind=case.kind,
            sources=case.sources,
            shape=list(mask.shape),
            tumor_volume_voxels=volume,
            slices_with_tumor=int((areas > 0).sum()),
            voxel_size_mm=list(case.voxel_size) if case.voxel_size else None,
            tumor_volume_ml=round(ml, 4) if ml is not None else None,
            dice=round(metrics.dice(mask, case.truth), 6) if case.truth is not None else None,
            dice_note=provenance_note(self.segmenter.bundle.info, case.name) if case.truth is not None else None,
            orientation=list(case.orientation) if case.orientation else None,
            shape_features=shape_out(mask, case.name, warnings),
            downloads=CaseDownloads(
                nifti=f"{base}/mask.nii.gz?case={position}", png_zip=f"{base}/mask.zip?case={position}"
            ),
            slices=slices,
        )

    def _pick(self, result_id: str, case: int | None) -> list[StoredCase]:
        cases = self.store.get(result_id)
        if case is None:
            return cases
        if not 0 <= case < len(cases):
            reject(404, f"result {result_id} has cases 0..{len(cases) - 1}, not {case}")
        return [cases[case]]

    def nifti_bytes(self, result_id: str, case: int) -> tuple[str, bytes]:
        """``(file name, .nii.gz bytes)`` of one case's mask, built on the download gate (503 when full)."""
        return self.downloads.run(self._nifti_bytes, result_id, case)

    def zip_bytes(self, result_id: str, case: int | None) -> tuple[str, bytes]:
        """``(file name, zip bytes)`` of PNG masks, built on the download gate (503 when full)."""
        return self.downloads.run(self._zip_bytes, result_id, case)

    def _nifti_bytes(self, result_id: str, case: int) -> tuple[str, bytes]:
        (stored,) = self._pick(result_id, case)
        folder = Path(tempfile.mkdtemp(prefix="lggseg-dl-", dir=self.limits.temp_dir))
        try:
            path = folder / "mask.nii.gz"
            nifti.save_volume(stored.mask_uint8(), path, usable_reference(stored.reference))
            return f"{safe_name(stored.name)}_mask.nii.gz", path.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _zip_bytes(self, result_id: str, case: int | None) -> tuple[str, bytes]:
        cases = self._pick(result_id, case)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for stored in cases:
                folder = safe_name(stored.name)
                for z, name in enumerate(stored.slice_names):
                    png = png_bytes(stored.slice_mask(z) * np.uint8(255))
                    archive.writestr(f"{folder}/{safe_name(name, 'slice')}_mask.png", png)
        name = f"{safe_name(cases[0].name)}_masks.zip" if len(cases) == 1 else "lggseg_masks.zip"
        return name, buffer.getvalue()


def _number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def shape_out(mask: np.ndarray, name: str, warnings: list[str]) -> ShapeOut | None:
    """The Shape panel of one case: its features and their place in the cohort (None: empty mask).

    Features as :func:`lggseg.shape.cohort.case_shape` measures them (voxel units, like the cohort);
    if they cannot be computed the case keeps its segmentation, without a panel, and a warning says why.
    """
    try:
        measured = case_shape(mask)
    except (ValueError, ArithmeticError, RuntimeError) as exc:  # RuntimeError: scipy QhullError
        warnings.append(f"{name}: no shape features ({type(exc).__name__}: {exc})")
        return None
    if measured is None:
        return None
    cohort = load_cohort()
    items = {}
    for feature in COHORT_FEATURES:
        box = cohort.summary(feature)
        items[feature] = ShapeFeature(
            value=measured.values[feature],
            percentile=measured.percentiles[feature],
            cohort=CohortBox(
                n=box.n,
                min=_number(box.minimum),
                q1=_number(box.q1),
                median=_number(box.median),
                q3=_number(box.q3),
                max=_number(box.maximum),
            ),
        )
    return ShapeOut(dimensions=measured.dimensions, largest_slice=measured.largest_slice + 1, **items)


def usable_reference(reference: Any) -> Any:
    """A NIfTI reference whose affine is finite: a NaN or infinite sform is replaced by the qform
    (when finite) or by the header's voxel-size affine, so that a mask can always be written."""
    if reference is None:
        return None
    affine = np.asarray(reference.affine, dtype=np.float64)
    if np.isfinite(affine).all():
        return reference
    header = reference.header.copy()
    candidates = [header.get_qform()] if int(header["qform_code"]) > 0 else []
    candidates.append(header.get_base_affine())
    fallback = next((a for a in candidates if np.isfinite(a).all()), np.eye(4))
    header.set_sform(fallback, code=0)
    return SimpleNamespace(affine=np.asarray(fallback, np.float64), header=header)
