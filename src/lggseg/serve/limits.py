"""What the server refuses, and how much work it takes on at once.

Every refusal is JSON ``{"detail": "..."}`` with a 4xx status (413 too large, 503 busy...).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from fastapi import HTTPException

from lggseg.errors import LggsegError

MB = 1 << 20


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
        for name in (
            "max_upload_bytes",
            "max_files",
            "max_image_side",
            "max_voxels",
            "max_slices",
            "max_zip_entries",
            "max_unzipped_bytes",
            "workers",
            "max_results",
            "max_result_bytes",
        ):
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


class Gate:
    """Admits at most ``workers + queue`` requests; runs their jobs on ``workers`` fixed threads.

    Admission happens before the body is read, so waiting requests hold at most one upload each
    (on disk, in their temporary folder); memory-heavy work happens only on the worker threads.
    Fixed threads matter: glibc gives each thread its own malloc arena, and with the allocator
    tuning of :mod:`lggseg.infer.runtime` (no trimming) every thread that ever ran the model would keep
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
