"""The memory budget every decoder checks before it allocates (CLI and server alike).

A file's header states how much memory decoding it will take (pixels x samples x bytes per
sample, or voxels x bytes). Decoders compare that figure with :data:`MAX_DECODED_BYTES` before
they allocate anything, so a small crafted file cannot make lggseg allocate gigabytes.
"""

from __future__ import annotations

from lggseg.errors import LggsegError

MAX_DECODED_BYTES = 1 << 30
"""At most 1 GiB of decoded array per input file (a 512 x 512 x 1000 float32 volume fits)."""


def check_decoded_bytes(n_bytes: int, label: str, limit: int = MAX_DECODED_BYTES) -> None:
    """Refuse an input whose header asks for more than ``limit`` bytes once decoded."""
    if n_bytes < 0 or n_bytes > limit:
        raise LggsegError(f"{label}: decoding it would need {n_bytes / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB); refused")
