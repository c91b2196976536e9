"""HTTP API and web page: ``lggseg serve`` runs :func:`create_app` with uvicorn.

Endpoints (the OpenAPI page at ``/docs`` documents them, with the JSON schemas):

* ``GET /`` — the web page (``lggseg/web/``): drop files, look through the slices, download.
* ``GET /healthz`` — model identity (SHA-256, architecture, post-processing), runtime, limits.
* ``POST /api/v1/segment`` — multipart field ``files``, one or more of:

  - slice images (TIFF, PNG, JPEG). Slices whose file names follow the data set's pattern
    ``<patient>_<n>.tif`` are grouped per patient (and per image size) into **one volume**:
    sorted by ``n``, normalised together and post-processed in 3D, exactly like a patient
    folder. A ``<patient>_<n>_mask.tif`` beside its image is taken as ground truth (Dice is
    reported). Any other slice is a case of its own, normalised with its own statistics.
  - a zip of a patient folder (or of several, kaggle_3m layout), read as ``lggseg predict``
    reads a folder (its own grid when all slices share a size); masks inside give a Dice.
  - a NIfTI volume (``.nii`` / ``.nii.gz``), read with lggseg's axis convention.

  The type of every file is decided by its content, never by its name. The JSON answer holds,
  per case, the tumor volume (voxels; mL too for NIfTI with a voxel size) and the number of
  slices with tumor, and per slice the tumor area (pixels) and the mask as a base64 PNG (plus
  the FLAIR image and an overlay with the outline, unless ``?images=false``).
* ``GET /api/v1/results/{id}/mask.nii.gz?case=K`` and ``GET /api/v1/results/{id}/mask.zip`` —
  the masks of a result as NIfTI (for a NIfTI input, with its affine and header) or as PNGs.
  Results are kept in a bounded in-memory LRU (``ServerLimits.max_results``); an evicted or
  unknown id answers 404.

Safety: the body size is checked while it is read; image dimensions are read from the header
before anything is decoded; zips are checked (entry count, total and per-entry ratio, ``..``,
absolute paths, links) before anything is extracted; uploads live only in a per-request
temporary folder that is removed when the request ends; at most ``workers`` requests are
processed at a time and at most ``queue`` more wait (others get 503). By default only loopback
``Host`` names are accepted and cross-site POSTs are refused. Every refusal is JSON
``{"detail": "..."}`` with a 4xx status (413 too large, 415 unsupported type, 400 malformed,
422 unreadable content, 404 unknown result, 503 busy).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import io
import ipaddress
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable, Literal, NoReturn, Sequence
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers

from lggseg import __version__, metrics, nifti, plots
from lggseg.dataset import SLICE_NAME, index_dataset, load_volume
from lggseg.errors import LggsegError
from lggseg.inference import Segmenter
from lggseg.predict import load_patient_native as load_native  # the rule of `lggseg predict` for a patient folder
from lggseg.predict import segment_any_size
from lggseg.readers import image_from_bytes, mask_from_bytes, sniff_format

MB = 1 << 20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""``Host`` names accepted by default (the server binds loopback; this blocks DNS rebinding)."""


# --------------------------------------------------------------------------------------------
# limits


@dataclass(frozen=True)
class ServerLimits:
    """Everything the server refuses beyond, and how much work it takes on at once."""

    max_upload_bytes: int = 50 * MB
    """Whole request body (all files together); checked while reading. -> 413"""
    max_files: int = 500
    """Files in one request (a patient of 88 slices with masks is 176). -> 413"""
    max_image_side: int = 2048
    """Width or height of one slice, read from the header before decoding. -> 413"""
    max_voxels: int = 32 * MB
    """Voxels in one request, all cases together (bounds memory per request). -> 413"""
    max_slices: int = 1024
    """Slices in one case. -> 413"""
    max_zip_entries: int = 2000
    max_unzipped_bytes: int = 512 * MB
    """Total uncompressed size of a zip's entries. -> 413"""
    max_zip_ratio: float = 100.0
    """Uncompressed/compressed ratio allowed for a zip entry larger than 1 MB. -> 413"""
    workers: int = 1
    """Requests segmented at the same time."""
    queue: int = 16
    """Requests allowed to wait for a worker; beyond that the server answers 503."""
    max_results: int = 32
    """Results kept in memory for download (least recently used first out)."""
    max_result_bytes: int = 256 * MB
    """Memory for kept masks (bit-packed)."""
    temp_dir: str | None = None
    """Where per-request temporary folders are made (default: the system's)."""

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_files", "max_image_side", "max_voxels", "max_slices", "max_zip_entries", "max_unzipped_bytes", "workers", "max_results", "max_result_bytes"):
            if getattr(self, name) < 1:
                raise LggsegError(f"server limit {name} must be >= 1, got {getattr(self, name)}")
        if self.queue < 0:
            raise LggsegError(f"server limit queue must be >= 0, got {self.queue}")
        if self.max_zip_ratio < 1:
            raise LggsegError(f"server limit max_zip_ratio must be >= 1, got {self.max_zip_ratio}")


def megabytes(n: float) -> str:
    """``52428800`` -> ``"50 MB"`` (1 MB = 2**20 bytes), ``100000`` -> ``"0.095 MB"``."""
    return f"{float(f'{n / MB:.3g}'):g} MB"


def reject(status: int, message: str) -> NoReturn:
    """Refuse the request: JSON ``{"detail": message}`` with ``status``."""
    raise HTTPException(status_code=status, detail=message)


# --------------------------------------------------------------------------------------------
# response schemas (they are the OpenAPI documentation of the answers)


class SliceOut(BaseModel):
    index: int = Field(description="1-based position of the slice in its case")
    name: str = Field(description="slice name (file stem, or <case>_<n> for volumes)")
    tumor_area_px: int = Field(description="predicted tumor area in pixels")
    truth_area_px: int | None = Field(None, description="ground-truth area when a mask was given")
    mask_png: str = Field(description="predicted mask, PNG (0/255) in base64, on the slice's grid")
    flair_png: str | None = Field(None, description="the FLAIR channel as a grey PNG in base64 (?images=true)")
    overlay_png: str | None = Field(None, description="FLAIR with the predicted outline in red (truth in green), PNG base64 (?images=true)")


class CaseDownloads(BaseModel):
    nifti: str = Field(description="URL of the mask as NIfTI (.nii.gz)")
    png_zip: str = Field(description="URL of the mask as a zip of PNG slices")


class CaseOut(BaseModel):
    name: str
    kind: Literal["slice", "slices", "patient", "nifti"] = Field(description="one slice; slices of one patient uploaded together; a patient folder from a zip; a NIfTI volume")
    sources: list[str] = Field(description="uploaded file (or zip entry) names")
    shape: list[int] = Field(description="mask shape (slices, height, width)")
    tumor_volume_voxels: int
    slices_with_tumor: int
    voxel_size_mm: list[float] | None = Field(None, description="NIfTI pixdim (i, j, k) in mm, when known")
    tumor_volume_ml: float | None = Field(None, description="tumor volume in millilitres, when the voxel size is known")
    dice: float | None = Field(None, description="3D Dice against the uploaded ground-truth masks, if any")
    downloads: CaseDownloads
    slices: list[SliceOut]


class SegmentOut(BaseModel):
    result_id: str = Field(description="id for the download URLs; kept while in the server's LRU")
    model_sha256: str
    runtime: str
    seconds: float = Field(description="processing time on the server")
    png_zip: str = Field(description="URL of all cases' masks as a zip of PNG slices")
    cases: list[CaseOut]
    warnings: list[str]


class ErrorOut(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "malformed request: not multipart, no files, empty file, unsafe zip entry names",
        413: "too large: body, file count, image dimensions, voxels, zip size, entries or ratio",
        415: "a file is not a TIFF/PNG/JPEG image, a zip or a NIfTI volume (checked by content)",
        422: "a file of a known type cannot be read (truncated image, corrupt NIfTI or zip)",
        503: "the server is busy (queue full); retry later",
    }.items()
}

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "slices (TIFF/PNG/JPEG), a zip of a patient folder, or a NIfTI volume",
                        }
                    },
                }
            }
        },
    }
}


# --------------------------------------------------------------------------------------------
# bounded concurrency


class Gate:
    """Admits at most ``workers + queue`` requests; runs their jobs on ``workers`` fixed threads.

    Admission happens before the body is read, so waiting requests hold at most one upload each
    (on disk, in their temporary folder); memory-heavy work happens only on the worker threads.
    Fixed threads matter: glibc gives each thread its own malloc arena, and with the allocator
    tuning of :mod:`lggseg.runtime` (no trimming) every thread that ever ran the model would keep
    its peak memory.
    """

    def __init__(self, workers: int, queue: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.capacity = workers + queue
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="lggseg-segment")
        self._lock = threading.Lock()
        self.admitted = 0
        self.running = 0

    def admit(self) -> None:
        with self._lock:
            if self.admitted >= self.capacity:
                reject(503, f"server busy: {self.admitted} requests in progress or waiting; retry in a few seconds")
            self.admitted += 1

    def leave(self) -> None:
        with self._lock:
            self.admitted -= 1

    def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """Run ``job(*args)`` on a worker thread and wait for it (call from a helper thread)."""
        return self.pool.submit(self._counted, job, *args).result()

    def _counted(self, job: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            self.running += 1
        try:
            return job(*args)
        finally:
            with self._lock:
                self.running -= 1


# --------------------------------------------------------------------------------------------
# receiving the multipart body


@dataclass
class Upload:
    """One uploaded file, stored in the request's temporary folder."""

    label: str  # client file name (base name, cleaned): for display and slice grouping only
    path: Path
    size: int = 0


def clean_label(raw: str, index: int) -> str:
    """Base name of a client file name, without control characters; never used as a path."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:200]
    return name or f"file{index + 1}"


def safe_name(text: str, fallback: str = "case") -> str:
    """A name safe inside a zip and a Content-Disposition header."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:120]
    return name or fallback


class _PartCollector:
    """Callbacks of python-multipart's streaming parser: file parts go to numbered files."""

    def __init__(self, folder: Path, limits: ServerLimits) -> None:
        self.folder = folder
        self.limits = limits
        self.files: list[Upload] = []
        self.finished = False
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._current: Upload | None = None
        self._handle: Any = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._field = self._value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        filename = options.get(b"filename")
        if filename is None:  # a plain form field: ignored
            self._current = None
            return
        if len(self.files) >= self.limits.max_files:
            reject(413, f"too many files in one request (the limit is {self.limits.max_files})")
        index = len(self.files)
        upload = Upload(clean_label(filename.decode("utf-8", "replace"), index), self.folder / f"part{index}")
        self.files.append(upload)
        self._current = upload
        self._handle = open(upload.path, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._handle.write(data[start:end])
            self._current.size += end - start

    def _part_end(self) -> None:
        self.close()
        self._current = None

    def _end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_uploads(request: Request, folder: Path, limits: ServerLimits) -> list[Upload]:
    """Stream a multipart body into ``folder``, refusing it as soon as it exceeds the limit."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        reject(415, "send the files as multipart/form-data in the field 'files'")
    boundary = options.get(b"boundary")
    if not boundary:
        reject(400, "multipart/form-data without a boundary")
    too_large = f"upload larger than the limit of {megabytes(limits.max_upload_bytes)}"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_upload_bytes:
        reject(413, too_large)
    collector = _PartCollector(folder, limits)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_upload_bytes:
                reject(413, too_large)
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        reject(400, f"malformed multipart body ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    finally:
        collector.close()
    if not collector.finished:
        reject(400, "incomplete multipart body")
    if not collector.files:
        reject(400, "no files uploaded; send slices, a zip or a NIfTI volume in the field 'files'")
    for upload in collector.files:
        if upload.size == 0:
            reject(400, f"{upload.label}: empty file")
    return collector.files


# --------------------------------------------------------------------------------------------
# recognising and checking files by content


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] == b"n+1\x00":
        return 348 in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big"))
    return len(head) >= 540 and head[4:8] == b"n+2\x00"


def sniff_upload(path: Path) -> Literal["image", "zip", "nifti", "nifti-gz"] | None:
    """What a file is, from its first bytes: an image, a zip, a NIfTI volume, or None."""
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    if sniff_format(head[:8]):
        return "image"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 544)
        except zlib.error:
            return None
        return "nifti-gz" if _is_nifti_header(inner) else None
    return "nifti" if _is_nifti_header(head) else None


def image_size(data: bytes, label: str) -> tuple[int, int]:
    """(width, height) of a TIFF/PNG/JPEG from its header, without decoding the pixels."""
    kind = sniff_format(data[:8])
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages[0]
                width, height = int(page.imagewidth), int(page.imagelength)
                values = int(np.prod(page.shape, dtype=np.float64))
            if values > 4 * width * height:
                reject(413, f"{label}: image holds {values} values for {width}x{height} pixels (more than 4 per pixel)")
            return width, height
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except HTTPException:
        raise
    except Exception as exc:  # decoders raise many types for corrupt headers
        if type(exc).__name__ == "DecompressionBombError":
            reject(413, f"{label}: image dimensions too large (decompression bomb guard)")
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{label}: cannot read image header ({reason})") from None


class Budget:
    """Voxels a request may still decode, and the per-slice and per-case size limits."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.used = 0

    def check_slice(self, width: int, height: int, label: str) -> None:
        side = self.limits.max_image_side
        if width > side or height > side:
            reject(413, f"{label}: image of {width}x{height} pixels is larger than the {side}x{side} limit")
        self.take(width * height, label)

    def check_case(self, depth: int, label: str) -> None:
        if depth > self.limits.max_slices:
            reject(413, f"{label}: {depth} slices, more than the limit of {self.limits.max_slices}")

    def take(self, voxels: int, label: str) -> None:
        self.used += voxels
        if self.used > self.limits.max_voxels:
            reject(413, f"{label}: the request holds more than {self.limits.max_voxels} voxels in all")


def extract_zip(path: Path, dest: Path, limits: ServerLimits, label: str = "zip") -> None:
    """Check every entry of a zip, then extract it under ``dest`` (and nowhere else).

    Refused: more than ``max_zip_entries`` entries, a total uncompressed size above
    ``max_unzipped_bytes``, an entry over 1 MB compressed more than ``max_zip_ratio`` times,
    absolute names, ``..`` components, links, encrypted or duplicate entries. Hidden files and
    ``__MACOSX/`` are skipped.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reject(422, f"{label}: not a readable zip archive ({exc})")
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_zip_entries:
            reject(413, f"{label}: {len(infos)} entries, more than the limit of {limits.max_zip_entries}")
        members: list[tuple[zipfile.ZipInfo, list[str]]] = []
        total = 0
        for info in infos:
            name = info.filename
            parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
                reject(400, f"{label}: entry {name!r} has an absolute path")
            if ".." in parts:
                reject(400, f"{label}: entry {name!r} points outside the archive ('..')")
            if stat.S_ISLNK(info.external_attr >> 16):
                reject(400, f"{label}: entry {name!r} is a symbolic link")
            if info.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
                continue
            if info.flag_bits & 0x1:
                reject(422, f"{label}: entry {name!r} is encrypted")
            total += info.file_size
            if total > limits.max_unzipped_bytes:
                reject(413, f"{label}: more than {megabytes(limits.max_unzipped_bytes)} once uncompressed")
            if info.file_size > MB and info.file_size > limits.max_zip_ratio * max(info.compress_size, 1):
                reject(413, f"{label}: entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f} times (zip bomb guard, limit {limits.max_zip_ratio:g})")
            members.append((info, parts))
        root = dest.resolve()
        written = 0
        for info, parts in members:
            target = dest.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                reject(400, f"{label}: entry {info.filename!r} points outside the archive")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "xb") as out:
                    while chunk := source.read(MB):
                        written += len(chunk)
                        if written > limits.max_unzipped_bytes:
                            reject(413, f"{label}: more than {megabytes(limits.max_unzipped_bytes)} once uncompressed")
                        out.write(chunk)
            except FileExistsError:
                reject(400, f"{label}: entry {info.filename!r} appears twice")
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                reject(422, f"{label}: entry {info.filename!r} cannot be extracted ({exc})")
            except OSError as exc:
                reject(400, f"{label}: entry {info.filename!r} cannot be extracted ({exc.strerror})")


# --------------------------------------------------------------------------------------------
# turning uploads into cases


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
                    reject(422, f"{label}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}")
            truth = np.stack([f[1] for f in found])  # type: ignore[index]
            used_masks.update((prefix, n) for n in numbers)
        elif any(f is not None for f in found):
            warnings.append(f"{prefix}: masks for only {sum(f is not None for f in found)} of {len(found)} slices; no Dice computed")
            used_masks.update((prefix, n) for n in numbers)
        names = [_stem(m[1]) for m in members]
        kind: Literal["slice", "slices"] = "slices" if len(members) > 1 else "slice"
        cases.append(Case(prefix if len(members) > 1 else names[0], kind, images, names, [m[1] for m in members], truth))
    for key, (label, _) in masks.items():
        if key not in used_masks:
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
            images, truth = load_native(patient)
            if images is None:  # slices of different sizes: the model grid, as `lggseg predict`
                volume = load_volume(patient)
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
        header_only = nib.load(str(upload.path))
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
            reject(415, f"{upload.label}: not a TIFF, PNG or JPEG slice, a zip of a patient folder, or a NIfTI volume (judged by content)")
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


# --------------------------------------------------------------------------------------------
# results kept for download


@dataclass
class StoredCase:
    name: str
    shape: tuple[int, int, int]
    packed: np.ndarray  # np.packbits of the (Z, H, W) mask
    slice_names: list[str]
    reference: Any = None

    def mask(self) -> np.ndarray:
        count = int(np.prod(self.shape))
        return np.unpackbits(self.packed, count=count).astype(bool).reshape(self.shape)


class ResultStore:
    """Masks of recent results, least recently used evicted first (by count and by bytes)."""

    def __init__(self, max_results: int, max_bytes: int) -> None:
        self.max_results = max_results
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, list[StoredCase]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(cases: list[StoredCase]) -> int:
        return sum(c.packed.nbytes for c in cases)

    def put(self, cases: list[Case]) -> str:
        stored = [StoredCase(c.name, tuple(c.mask.shape), np.packbits(c.mask), c.slice_names, c.reference) for c in cases]  # type: ignore[union-attr, arg-type]
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = stored
            while len(self._items) > self.max_results or (len(self._items) > 1 and sum(self._size(v) for v in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> list[StoredCase]:
        with self._lock:
            if key not in self._items:
                reject(404, f"no result {key!r}: unknown, or evicted after {self.max_results} newer results; segment again")
            self._items.move_to_end(key)
            return self._items[key]


# --------------------------------------------------------------------------------------------
# the service


def png_base64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


class Service:
    """The model, the limits, the gate and the result store behind the routes."""

    def __init__(self, segmenter: Segmenter, runtime: str, limits: ServerLimits) -> None:
        self.segmenter = segmenter
        self.runtime = runtime
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
                case.mask = segment_any_size(self.segmenter, case.images)
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
            )
            if include_images:
                item.flair_png = png_base64(np.ascontiguousarray(image[..., 1]))
                item.overlay_png = png_base64(plots.overlay(image, slice_mask, truth))
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
            downloads=CaseDownloads(nifti=f"{base}/mask.nii.gz?case={position}", png_zip=f"{base}/mask.zip?case={position}"),
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
                    archive.writestr(f"{folder}/{safe_name(name, 'slice')}_mask.png", png_bytes(slice_mask.astype(np.uint8) * 255))
        name = f"{safe_name(cases[0].name)}_masks.zip" if len(cases) == 1 else "lggseg_masks.zip"
        return name, buffer.getvalue()


# --------------------------------------------------------------------------------------------
# host / origin guard (DNS rebinding and cross-site requests)


def _hostname(value: str) -> str | None:
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


class RequestGuard:
    """ASGI middleware: refuse unknown ``Host`` names (400) and cross-origin POSTs (403)."""

    def __init__(self, app: Any, allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed is not None and (_hostname(host) or "") not in self.allowed:
            return 400, f"host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed))})"
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            if urlsplit(origin).netloc.lower() != host.lower():
                return 403, "cross-origin requests are refused"
        return None


# --------------------------------------------------------------------------------------------
# the app


WEB_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _web_file(name: str) -> bytes:
    return resources.files("lggseg").joinpath("web", name).read_bytes()


def _attachment(filename: str, data: bytes, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def create_app(
    weights: str | Path | None = None,
    runtime: str = "torch",
    limits: ServerLimits | None = None,
    *,
    segmenter: Segmenter | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The FastAPI app. Loads the model once (or reuses ``segmenter``) and shares it.

    ``allowed_hosts``: ``Host`` names answered (None: any, for a server bound to a LAN address).
    """
    limits = limits or ServerLimits()
    segmenter = segmenter or Segmenter.from_weights(weights, runtime)
    service = Service(segmenter, runtime, limits)
    pages = {name: _web_file(name) for name in ["index.html", *WEB_FILES]}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.gate.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        title="lggseg",
        version=__version__,
        summary="Segment lower-grade glioma FLAIR abnormality in brain MRI slices and volumes.",
        description=(__doc__ or "").split("\n\n", 1)[0] + " Research use only; not for diagnosis.",
        docs_url=None,  # served below from local files: the default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(pages["index.html"], media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in WEB_FILES:
            reject(404, f"no such file: {name}")
        return Response(pages[name], media_type=WEB_FILES[name], headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="lggseg API", swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/docs-assets/{name}", include_in_schema=False)
    def api_docs_asset(name: str) -> Response:
        if name not in SWAGGER_FILES:
            reject(404, f"no such file: {name}")
        return Response(_swagger_file(name), media_type=SWAGGER_FILES[name])

    @app.get("/healthz", summary="Model identity and readiness")
    def healthz() -> dict[str, Any]:
        return service.health()

    @app.post(
        "/api/v1/segment",
        summary="Segment slices, a zipped patient folder or a NIfTI volume",
        description=(
            "Multipart field `files` (repeat it for several files). Types are recognised by content. "
            "Slices named `<patient>_<n>.<ext>` are grouped per patient into one volume (normalised together, "
            "3D post-processing); `<patient>_<n>_mask.<ext>` files give ground truth and a Dice. Other slices are "
            "segmented one by one. Masks are on each input's own grid (a zipped patient folder whose slices differ "
            "in size is put on the 256x256 model grid). Download the masks from the URLs in the answer while the result is kept."
        ),
        response_model=SegmentOut,
        responses=ERRORS,  # type: ignore[arg-type]
        openapi_extra=UPLOAD_SCHEMA,
    )
    async def segment(request: Request, images: bool = Query(True, description="include the FLAIR image and the overlay of each slice")) -> SegmentOut:
        service.gate.admit()
        try:
            folder = Path(tempfile.mkdtemp(prefix="lggseg-req-", dir=limits.temp_dir))
            try:
                uploads = await receive_uploads(request, folder, limits)
                return await run_in_threadpool(service.gate.run, service.analyse, uploads, folder, images)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            service.gate.leave()

    @app.get(
        "/api/v1/results/{result_id}/mask.nii.gz",
        summary="Download a case's mask as NIfTI",
        description="uint8 0/1 volume in lggseg's axis convention; for a NIfTI input it carries the input's affine and header.",
        response_class=Response,
        responses={200: {"content": {"application/gzip": {}}}, 404: {"model": ErrorOut}},
    )
    async def download_nifti(result_id: str, case: int = Query(0, description="case index in the result")) -> Response:
        name, data = await run_in_threadpool(service.nifti_bytes, result_id, case)
        return _attachment(name, data, "application/gzip")

    @app.get(
        "/api/v1/results/{result_id}/mask.zip",
        summary="Download masks as a zip of PNG slices",
        description="One folder per case with `<slice>_mask.png` (0/255). Without `case`, all cases of the result.",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}, 404: {"model": ErrorOut}},
    )
    async def download_zip(result_id: str, case: int | None = Query(None, description="case index; all cases if absent")) -> Response:
        name, data = await run_in_threadpool(service.zip_bytes, result_id, case)
        return _attachment(name, data, "application/zip")

    return app


# --------------------------------------------------------------------------------------------
# running it


SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


def _swagger_file(name: str) -> bytes:
    """A Swagger UI asset from the ``swagger-ui-bundle`` package (the machine may be offline)."""
    import swagger_ui_bundle

    return (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail early, with one clear line, when the address cannot be bound."""
    import socket

    if not 0 < port < 65536:
        raise LggsegError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LggsegError(f"cannot resolve --host {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise LggsegError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    weights: str | Path | None = None,
    runtime: str = "torch",
    limits: ServerLimits | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Load the model and run the app with uvicorn until interrupted."""
    import uvicorn

    limits = limits or ServerLimits()
    check_port_free(host, port)
    loopback = is_loopback(host)
    try:
        app = create_app(weights, runtime, limits, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    except ImportError as exc:
        raise LggsegError(f"runtime {runtime!r} is not available ({exc})") from None
    if not loopback:
        log(f"warning: listening on {host}, reachable from other machines; the server has no authentication")
    shown = f"[{host}]" if ":" in host else host
    log(f"lggseg serving on http://{shown}:{port}/  (API docs at /docs; Ctrl+C to stop)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=limits.workers + limits.queue + 32,
    )
