"""The memory budget every decoder checks before it allocates (CLI and server alike).

A file's header states how much memory decoding it will take (pixels x samples x bytes per
sample, or voxels x bytes). Decoders compare that figure with :data:`MAX_DECODED_BYTES` before
they allocate anything, so a small crafted file cannot make lggseg allocate gigabytes.

Files themselves are read through :func:`read_regular`, which opens a path without blocking,
refuses anything that is not a regular file (a FIFO would hang a reader forever, ``/dev/zero``
would fill the memory) and anything larger than the caller's limit, all before reading a byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lggseg.errors import LggsegError

MAX_DECODED_BYTES = 1 << 30
"""At most 1 GiB of decoded array per input file (a 512 x 512 x 1000 float32 volume fits)."""

MAX_FILE_BYTES = 1 << 30
"""Default largest file :func:`read_regular` reads (1 GiB)."""


def check_decoded_bytes(n_bytes: int, label: str, limit: int = MAX_DECODED_BYTES) -> None:
    """Refuse an input whose header asks for more than ``limit`` bytes once decoded."""
    if n_bytes < 0 or n_bytes > limit:
        raise LggsegError(
            f"{label}: decoding it would need {n_bytes / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB); refused"
        )


def read_regular(path: str | Path, label: str, limit: int = MAX_FILE_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path``, read only once it is known to be a regular file of at most ``limit`` bytes.

    ``label`` names the file in messages; ``what`` is what was expected ("an image file"...).
    Every problem is one :class:`LggsegError` line: no such file, a folder, a device / FIFO /
    socket, too large, or the operating system's reason.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO without a writer would block
    except FileNotFoundError:
        raise LggsegError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise LggsegError(f"{label}: is a folder, expected {what}") from None
    except OSError as exc:
        raise LggsegError(f"{label}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise LggsegError(f"{label}: is a folder, expected {what}")
        if not stat.S_ISREG(info.st_mode):
            raise LggsegError(f"{label}: not a regular file (a device, FIFO or socket); refused")
        if info.st_size > limit:
            raise LggsegError(f"{label}: {info.st_size / 2**20:.0f} MiB, larger than the {limit / 2**20:.0f} MiB limit")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise LggsegError(f"{label}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:  # it grew while being read
        raise LggsegError(f"{label}: larger than the {limit / 2**20:.0f} MiB limit")
    return data
