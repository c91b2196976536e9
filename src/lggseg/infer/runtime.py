"""Speed settings (measured; see README, Performance): allocator tuning, device, bf16 autocast, channels_last."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import os
import shutil
import sys

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


COMPILE_MIN_STEPS = 1000
"""``compile: auto`` compiles a training run of at least this many optimizer steps. On 2 CPU cores the
compile takes about a minute, and each step of recipe v3 then runs about 1.5x faster (README,
Performance); a short run would spend more time compiling than it saves."""


def use_compile(requested: str, device: torch.device, steps: int, distributed: bool = False) -> bool:
    """Resolve a training run's ``compile`` setting (``auto``/``on``/``off``).

    ``auto`` compiles a single-process run of at least :data:`COMPILE_MIN_STEPS` steps on CUDA, or
    on a CPU where the C++ compiler that TorchInductor calls (``$CXX``, else ``g++``) exists.
    """
    if requested in ("on", "off"):
        return requested == "on"
    if distributed or steps < COMPILE_MIN_STEPS:
        return False
    if device.type == "cpu":
        return shutil.which(os.environ.get("CXX", "g++")) is not None
    return device.type == "cuda"


def compile_for_training(model: nn.Module, fall_back: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)``: the same parameters, traced on the first call (inputs ``(B, C, H, W)``
    of one shape per run, so it compiles once per process). With ``fall_back``, a graph that fails
    to compile runs eagerly instead of stopping the run (``compile: auto``). ``backend`` other than
    TorchInductor is for tests (``aot_eager`` traces forward and backward without generating code)."""
    if fall_back:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True
    return torch.compile(model, backend=backend)  # type: ignore[return-value]


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device, or a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to device and use channels_last memory format (1.4-1.8x on CPU convs)."""
    return model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which each Conv2d followed by a BatchNorm2d (inside an
    ``nn.Sequential``) is one convolution: the same function up to rounding, one pass less."""
    folded = copy.deepcopy(model).eval()
    for block in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(block)):
            conv, norm = block[i - 1], block[i]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                block[i - 1] = fuse_conv_bn_eval(conv, norm)
                block[i] = nn.Identity()
    return folded


def prepare_for_inference(model: nn.Module, device: torch.device, bf16: bool) -> nn.Module:
    """A frozen inference copy: BatchNorm folded, channels_last, and bf16 weights when ``bf16``
    (cast once here instead of on every call, as autocast does). Batch 1 on the README's AMD CPU:
    11.4 -> 9.4 ms (``benchmarks/inference.py``)."""
    ready = fold_batchnorm(model).to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return ready.to(torch.bfloat16) if bf16 else ready
