"""The service behind the routes: the model, the limits, the gate and the result store."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.errors import LggsegError
from lggseg.evaluation import metrics
from lggseg.evaluation.render import overlay, png_base64, png_bytes
from lggseg.infer.segmenter import Segmenter
from lggseg.io import nifti
from lggseg.serve.cases import Case, build_cases, relabel
from lggseg.serve.limits import Gate, ServerLimits, reject
from lggseg.serve.schemas import CaseDownloads, CaseOut, SegmentOut, SliceOut
from lggseg.serve.store import ResultStore, StoredCase
from lggseg.serve.uploads import Upload, safe_name
from lggseg.version import __version__


class Service:
    """The model, the limits, the gate and the result store behind the routes."""

    def __init__(self, segmenter: Segmenter, limits: ServerLimits) -> None:
        self.segmenter = segmenter
        self.runtime = segmenter.config.runtime
        self.limits = limits
        self.gate = Gate(limits.workers, limits.queue)
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
                "config": bundle.config.to_dict(),
                "postprocess": bundle.post.to_dict(),
                "tta": bundle.tta,
                "info": bundle.info,
                "weights_file": bundle.path.name if bundle.path else None,
            },
            "limits": {k: v for k, v in asdict(self.limits).items() if k != "temp_dir"},
            "load": {"admitted": self.gate.admitted, "running": self.gate.running},
        }

    def analyse(self, uploads: list[Upload], folder: Path, include_images: bool) -> SegmentOut:
        """Read, segment and summarise (runs in a worker thread, inside the gate)."""
        began = time.perf_counter()
        warnings: list[str] = []
        try:
            cases = build_cases(uploads, folder, self.limits, warnings)
            for case in cases:
                case.mask = self.segmenter.segment(case.images)
        except LggsegError as exc:
            reject(422, relabel(str(exc), folder, ""))
        result_id = self.store.put(cases)
        base = f"/api/v1/results/{result_id}"
        out = [self._case_out(case, position, base, include_images) for position, case in enumerate(cases)]
        return SegmentOut(
            result_id=result_id,
            model_sha256=self.segmenter.bundle.sha256,
            runtime=self.runtime,
            seconds=round(time.perf_counter() - began, 4),
            png_zip=f"{base}/mask.zip",
            cases=out,
            warnings=[relabel(w, folder, "") for w in warnings],
        )

    @staticmethod
    def _case_out(case: Case, position: int, base: str, include_images: bool) -> CaseOut:
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
            )
            if include_images:
                item.flair_png = png_base64(np.ascontiguousarray(image[..., 1]))
                item.overlay_png = png_base64(overlay(image, slice_mask, truth))
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
        (stored,) = self._pick(result_id, case)
        folder = Path(tempfile.mkdtemp(prefix="lggseg-dl-", dir=self.limits.temp_dir))
        try:
            path = folder / "mask.nii.gz"
            nifti.save_volume(stored.mask().astype(np.uint8), path, stored.reference)
            return f"{safe_name(stored.name)}_mask.nii.gz", path.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def zip_bytes(self, result_id: str, case: int | None) -> tuple[str, bytes]:
        cases = self._pick(result_id, case)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for stored in cases:
                folder = safe_name(stored.name)
                for slice_mask, name in zip(stored.mask(), stored.slice_names):
                    archive.writestr(
                        f"{folder}/{safe_name(name, 'slice')}_mask.png", png_bytes(slice_mask.astype(np.uint8) * 255)
                    )
        name = f"{safe_name(cases[0].name)}_masks.zip" if len(cases) == 1 else "lggseg_masks.zip"
        return name, buffer.getvalue()
