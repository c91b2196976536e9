"""Speed settings (measured; see README, Performance): allocator tuning, device, bf16 autocast, channels_last."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Stop glibc from returning activation buffers to the kernel (1.6-2.6x on CPU).

    Calls ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``. Returns False
    where glibc is not available (macOS, musl), where it is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (avx512_bf16 or AMX), where autocast pays."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: torch.device, requested: str = "auto") -> bool:
    """Resolve a ``bf16`` setting (``auto``/``on``/``off``) for a device."""
    if requested == "off":
        return False
    if requested == "on":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device, or a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to device and use channels_last memory format (1.4-1.8x on CPU convs)."""
    return model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
