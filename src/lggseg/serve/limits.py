"""What the server refuses, how long it waits for a client, and how much work it takes on at once.

Every refusal is JSON ``{"detail": "..."}`` with a 4xx status (413 too large, 408 too slow, 503
busy...).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, NoReturn

from fastapi import HTTPException

from lggseg.errors import LggsegError

MB = 1 << 20

ZIP_RATIO_FLOOR = 32 * MB
"""A zip may always expand to this much in all; beyond it, at most ``max_zip_ratio`` times its own size."""


@dataclass(frozen=True)
class ServerLimits:
    """Everything the server refuses beyond, how long it waits, and how much work it takes on at once."""

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
    max_request_slices: int = 256
    """Slices segmented for one request, all cases together (bounds the worker's time). -> 413"""
    max_request_cases: int = 64
    """Cases segmented for one request (a loose slice is a case of its own). -> 413"""
    max_decoded_bytes: int = 512 * MB
    """Memory a request's NIfTI volumes take once decoded (voxels x bytes, from the headers). -> 413"""
    max_zip_entries: int = 2000
    max_unzipped_bytes: int = 512 * MB
    """Total uncompressed size of a zip's entries (as declared, checked before writing). -> 413"""
    max_zip_ratio: float = 100.0
    """Uncompressed/compressed ratio allowed for a zip entry larger than 1 MB, and for a whole zip
    that expands to more than :data:`ZIP_RATIO_FLOOR`. -> 413"""
    workers: int = 1
    """Requests segmented at the same time."""
    queue: int = 16
    """Requests whose body has arrived that may wait for a worker; beyond that the server answers 503."""
    max_receiving_bytes: int = 1024 * MB
    """Upload bytes still arriving, all requests together (they wait on disk); beyond -> 503."""
    download_workers: int = 1
    """Downloads (NIfTI, zip) built at the same time, on fixed threads."""
    download_queue: int = 64
    """Downloads allowed to wait for a download worker; beyond that -> 503."""
    max_results: int = 32
    """Results kept in memory for download (least recently used first out)."""
    max_result_bytes: int = 256 * MB
    """Memory for kept masks (bit-packed)."""
    header_timeout: float = 10.0
    """Seconds a connection has to send a complete request head, counted from when it opens or from
    the end of its previous response (an idle or half-sent connection is closed then)."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection stays open after a response."""
    body_idle_timeout: float = 30.0
    """Seconds an upload may go without sending a byte. -> 408"""
    body_timeout: float = 300.0
    """Seconds for a whole upload body. -> 408"""
    max_connections: int = 512
    """Open connections; beyond it the connection idle for the longest time (waiting for its
    request head) is closed to make room, so idle connections never starve a request."""
    temp_dir: str | None = None
    """Where per-request temporary folders are made (default: the system's)."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "temp_dir":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LggsegError(f"server limit {item.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise LggsegError(f"server limit {item.name} must be finite, got {value}")
            if item.type in ("int", int) and not isinstance(value, int):
                raise LggsegError(f"server limit {item.name} must be an integer, got {value}")
        for item in fields(self):
            if item.name == "temp_dir":
                continue
            value = getattr(self, item.name)
            if item.name == "max_zip_ratio":
                if value < 1:
                    raise LggsegError(f"server limit max_zip_ratio must be >= 1, got {value}")
            elif item.type in ("float", float):
                if value <= 0:
                    raise LggsegError(f"server limit {item.name} must be > 0 seconds, got {value}")
            elif value < (0 if item.name in ("queue", "download_queue") else 1):
                low = 0 if item.name in ("queue", "download_queue") else 1
                raise LggsegError(f"server limit {item.name} must be >= {low}, got {value}")


def megabytes_to_bytes(value: float, option: str = "--max-upload-mb") -> int:
    """An option in MB (2**20 bytes) -> bytes; NaN, infinities, 0 and negative values are refused."""
    if not math.isfinite(value) or value <= 0:
        raise LggsegError(f"{option} must be a positive number of megabytes, got {value}")
    if value > 1 << 30:
        raise LggsegError(f"{option} of {value:g} MB is beyond any disk; give a smaller value")
    return max(1, int(value * MB))


def megabytes(n: float) -> str:
    """``52428800`` -> ``"50 MB"`` (1 MB = 2**20 bytes), ``100000`` -> ``"0.095 MB"``."""
    return f"{float(f'{n / MB:.3g}'):g} MB"


def reject(status: int, message: str) -> NoReturn:
    """Refuse the request: JSON ``{"detail": message}`` with ``status``."""
    raise HTTPException(status_code=status, detail=message)


class Gate:
    """Runs jobs on ``workers`` fixed threads; at most ``workers + queue`` jobs are in it at once.

    A request enters the gate (:meth:`run`) only once its body has fully arrived, so a slow or
    stalled upload never holds a place: it waits on disk, bounded by the body timeouts and by
    ``max_receiving_bytes``. :meth:`admit` / :meth:`leave` only count the requests whose body is
    still being read (shown by ``/healthz``); they never refuse.

    Fixed threads matter: glibc gives each thread its own malloc arena, and with the allocator
    tuning of :mod:`lggseg.infer.runtime` (no trimming) every thread that ever ran the model would
    keep its peak memory.
    """

    def __init__(self, workers: int, queue: int, name: str = "lggseg-segment", what: str = "requests") -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.capacity = workers + queue
        self.what = what
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self.admitted = 0
        """Jobs waiting for a worker or running."""
        self.running = 0
        self.receiving = 0
        """Requests whose body is still arriving (not counted against the capacity)."""
        self.receiving_bytes = 0

    def admit(self) -> None:
        """A request starts sending its body (counted, never refused)."""
        with self._lock:
            self.receiving += 1

    def leave(self) -> None:
        with self._lock:
            self.receiving -= 1

    def take_bytes(self, n: int, limit: int) -> None:
        """Count ``n`` more upload bytes on disk; 503 when all uploads together exceed ``limit``."""
        with self._lock:
            if self.receiving_bytes + n > limit:
                reject(503, f"server busy: uploads in progress hold {self.receiving_bytes} bytes; retry shortly")
            self.receiving_bytes += n

    def give_bytes(self, n: int) -> None:
        with self._lock:
            self.receiving_bytes -= n

    def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """Run ``job(*args)`` on a worker thread and wait for it (call from a helper thread); 503 when full."""
        with self._lock:
            if self.admitted >= self.capacity:
                reject(503, f"server busy: {self.admitted} {self.what} in progress or waiting; retry in a few seconds")
            self.admitted += 1
        try:
            return self.pool.submit(self._counted, job, *args).result()
        finally:
            with self._lock:
                self.admitted -= 1

    def _counted(self, job: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            self.running += 1
        try:
            return job(*args)
        finally:
            with self._lock:
                self.running -= 1


class Budget:
    """What a request may still take: voxels, slices and cases, plus the per-slice and per-case limits."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.used = 0
        self.slices = 0

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


def check_work(slices: int, cases: int, limits: ServerLimits, exact: bool = True) -> None:
    """Refuse a request that asks for more slices or cases than one request may (413)."""
    at_least = "" if exact else "at least "
    if slices > limits.max_request_slices:
        reject(
            413,
            f"the request holds {at_least}{slices} slices; one request may hold {limits.max_request_slices} "
            "(send fewer slices per request)",
        )
    if cases > limits.max_request_cases:
        reject(
            413,
            f"the request holds {at_least}{cases} separate cases; one request may hold {limits.max_request_cases} "
            "(name slices <patient>_<n> to group them, or send fewer per request)",
        )
