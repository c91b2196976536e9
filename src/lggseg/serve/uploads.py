"""Receiving uploads: the streamed multipart body, recognising files by content, safe zip extraction.

The body is read under two deadlines (``body_idle_timeout`` without a byte, ``body_timeout`` in
all; 408), counted against the request's and the server's byte limits as it arrives (413, 503),
and written to the request's temporary folder; the request joins the work queue only after that.
A client that goes away mid-upload is one log line. File names are decoded as UTF-8, as browsers
and HTTP libraries send them. A full disk is the server's problem (507), never the client's.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import io
import logging
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, NoReturn

import numpy as np
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from lggseg.errors import LggsegError
from lggseg.io.images import sniff_format
from lggseg.serve.limits import MB, ZIP_RATIO_FLOOR, Gate, ServerLimits, megabytes, reject

log = logging.getLogger("lggseg.serve")

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Write errors that mean the server ran out of space (EFBIG: a file-size limit such as ``ulimit -f``)."""


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


def decode_filename(raw: bytes) -> str:
    """A multipart file name as sent: UTF-8 (browsers, httpx, curl), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def server_write_error(exc: OSError, what: str) -> NoReturn:
    """A write failed on the server's side: 507 for a full disk, else 500; logged either way."""
    full = exc.errno in DISK_FULL
    log.error("cannot write %s: %s (%s)", what, exc.strerror or exc, "disk full" if full else "server error")
    if full:
        reject(507, f"the server ran out of disk space while writing {what}; try again later or send less")
    reject(500, f"the server could not write {what} ({exc.strerror or type(exc).__name__}); see the server log")


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
        self._headers: dict[str, bytes] = {}
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
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        # latin-1 keeps every byte as one character, so the file name comes back as the bytes sent
        _, options = parse_options_header(self._headers.get("content-disposition", b"").decode("latin-1"))
        filename = options.get(b"filename")
        if filename is None:  # a plain form field: ignored
            self._current = None
            return
        if len(self.files) >= self.limits.max_files:
            reject(413, f"too many files in one request (the limit is {self.limits.max_files})")
        index = len(self.files)
        upload = Upload(clean_label(decode_filename(filename), index), self.folder / f"part{index}")
        self.files.append(upload)
        self._current = upload
        try:
            self._handle = open(upload.path, "wb")
        except OSError as exc:
            server_write_error(exc, "an upload")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            try:
                self._handle.write(data[start:end])
            except OSError as exc:
                server_write_error(exc, "an upload")
            self._current.size += end - start

    def _part_end(self) -> None:
        self.close()
        self._current = None

    def _end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()  # flushes: a full disk can show here
            except OSError as exc:
                server_write_error(exc, "an upload")


def _gate_of(request: Request) -> Gate | None:
    service = getattr(request.app.state, "service", None)
    return getattr(service, "gate", None)


async def receive_uploads(request: Request, folder: Path, limits: ServerLimits) -> list[Upload]:
    """Stream a multipart body into ``folder`` under the body deadlines and byte limits."""
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
    gate = _gate_of(request)
    received = taken = 0
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in _body_chunks(request, limits):
            received += len(chunk)
            if received > limits.max_upload_bytes:
                reject(413, too_large)
            if gate is not None:
                gate.take_bytes(len(chunk), limits.max_receiving_bytes)
                taken += len(chunk)
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        reject(400, f"malformed multipart body ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    finally:
        if gate is not None:
            gate.give_bytes(taken)
        collector.close()
    if not collector.finished:
        reject(400, "incomplete multipart body")
    if not collector.files:
        reject(400, "no files uploaded; send slices, a zip or a NIfTI volume in the field 'files'")
    for upload in collector.files:
        if upload.size == 0:
            reject(400, f"{upload.label}: empty file")
    return collector.files


async def _body_chunks(request: Request, limits: ServerLimits) -> Any:
    """The body's chunks; 408 when the client pauses ``body_idle_timeout`` or overruns ``body_timeout``.

    A client that disconnects gets one log line and a 400 nobody reads (no traceback).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_timeout
    chunks = request.stream().__aiter__()
    received = 0
    while True:
        remaining = deadline - loop.time()
        wait = min(limits.body_idle_timeout, remaining)
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), wait)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            overall = remaining <= limits.body_idle_timeout
            reject(
                408,
                f"upload too slow: {received} bytes in {limits.body_timeout:g} s"
                if overall
                else f"upload stalled: no data for {limits.body_idle_timeout:g} s after {received} bytes",
            )
        except ClientDisconnect:
            reject(400, f"upload aborted by the client after {received} bytes")
        received += len(chunk)
        yield chunk


def nifti_header_shape(path: Path, compressed: bool) -> tuple[tuple[int, ...], int] | None:
    """``(shape, bytes per stored value)`` from a NIfTI-1/2 header, reading only the header; None if unreadable."""
    import nibabel as nib

    try:
        opener: Any = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            head = handle.read(540)
        kind = nib.Nifti2Header if head[4:8] == b"n+2\x00" else nib.Nifti1Header
        header = kind.from_fileobj(io.BytesIO(head))
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = int(np.dtype(header.get_data_dtype()).itemsize)
    except Exception:  # nibabel and gzip raise many types for a bad header; the reader reports it
        return None
    if any(n < 0 for n in shape):
        return None
    return shape, itemsize


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


def extract_zip(path: Path, dest: Path, limits: ServerLimits, label: str = "zip") -> None:
    """Check every entry of a zip, then extract it under ``dest`` (and nowhere else).

    Refused before anything is written (from the sizes the archive declares, which
    :mod:`zipfile` enforces while reading): more than ``max_zip_entries`` entries, a total
    uncompressed size above ``max_unzipped_bytes``, or above both :data:`ZIP_RATIO_FLOOR` and
    ``max_zip_ratio`` times the archive's own size (a 749 KB zip of many 1 MB entries of zeros no
    longer writes 466 MB), an entry over 1 MB compressed more than ``max_zip_ratio`` times; absolute
    names, ``..`` components, links, encrypted or duplicate entries. Hidden files and ``__MACOSX/``
    are skipped. A full disk while extracting is 507 (the server's problem, logged), never 400.
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
                reject(
                    413,
                    f"{label}: entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f} times (zip "
                    f"bomb guard, limit {limits.max_zip_ratio:g})",
                )
            members.append((info, parts))
        size = max(path.stat().st_size, 1)
        if total > ZIP_RATIO_FLOOR and total > limits.max_zip_ratio * size:
            reject(
                413,
                f"{label}: expands {total / size:.0f} times in all, to {megabytes(total)} (zip bomb guard, limit "
                f"{limits.max_zip_ratio:g} times beyond {megabytes(ZIP_RATIO_FLOOR)})",
            )
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
                if exc.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EILSEQ, errno.EINVAL):
                    reject(400, f"{label}: entry {info.filename!r} cannot be extracted ({exc.strerror})")
                server_write_error(exc, f"{label}: entry {info.filename!r}")
