"""The backends that run the network for :class:`lggseg.infer.segmenter.Segmenter`.

:class:`TorchBackend` is eager PyTorch with the tuned settings of :mod:`lggseg.infer.runtime`;
:class:`OnnxBackend` is ONNX Runtime on the CPU (``--runtime onnx``). Both take ``(B, C, H, W)``
float32 normalised images (C = the model's ``in_channels``) and return ``(B, 1, H, W)`` float32
probabilities.

The ONNX graph comes from :func:`lggseg.model.onnx_export.build_onnx`. Exporting takes seconds, so the exported
file is cached next to the weights as ``<weights stem>.<sha256[:12]>.onnx`` and reused while its
``weights_sha256`` metadata matches; where that folder is not writable the model is exported in
memory on every start. ``onnxruntime`` is imported here only, so ``import lggseg`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lggseg.errors import LggsegError
from lggseg.infer import runtime
from lggseg.model.bundle import ModelBundle


class Backend(Protocol):
    """Runs the network: ``(B, C, H, W)`` float32 normalised -> ``(B, 1, H, W)`` probabilities."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """Eager PyTorch with the tuned settings: malloc tuning, BatchNorm folded, channels_last, bf16
    weights where the hardware has bf16.

    device: ``auto`` (CUDA when present), ``cpu``, ``cuda``...; bf16: ``auto``/``on``/``off``;
    threads: intra-op threads (0 or None: torch's default).
    """

    def __init__(
        self, bundle: ModelBundle, device: str = "auto", bf16: str = "auto", threads: int | None = None
    ) -> None:
        runtime.tune_malloc()
        if threads:
            torch.set_num_threads(threads)
        self.device = runtime.pick_device(device)
        self.bf16 = runtime.use_bf16(self.device, bf16)
        self.model = runtime.prepare_for_inference(bundle.model, self.device, self.bf16)
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.model(x).float()).cpu().numpy()


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may run on (ORT's default counts physical cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cache_path(bundle: ModelBundle) -> Path | None:
    """Where the exported graph of ``bundle`` is cached (None for a bundle without a file)."""
    if bundle.path is None:
        return None
    return bundle.path.with_name(f"{bundle.path.stem}.{bundle.sha256[:12]}.onnx")


def _cached_model_matches(path: Path, bundle: ModelBundle) -> bool:
    """True when ``path`` is a readable export of exactly these weights in the current format."""
    import onnx

    from lggseg.model.onnx_export import ONNX_FORMAT

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # a damaged cache is rebuilt, never trusted
        return False
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("weights_sha256") == bundle.sha256 and props.get("lggseg_onnx_format") == ONNX_FORMAT


def onnx_model_for(bundle: ModelBundle, cache: bool = True) -> str | bytes:
    """The ONNX graph of ``bundle``: a cached file path, or serialised bytes when not cacheable."""
    from lggseg.model.onnx_export import build_onnx, write_model

    path = cache_path(bundle) if cache else None
    if path is not None and path.exists() and _cached_model_matches(path, bundle):
        return str(path)
    model = build_onnx(bundle)
    if path is not None:
        try:
            write_model(model, path)
            return str(path)
        except LggsegError:  # read-only install: keep the graph in memory
            pass
    return model.SerializeToString()


class OnnxBackend:
    """ONNX Runtime on the CPU: ``(B, C, H, W)`` float32 normalised -> ``(B, 1, H, W)`` probabilities.

    ``model`` overrides the graph (a path or serialised bytes, e.g. an int8-quantised variant);
    by default it is exported from ``bundle`` (and cached, see :func:`onnx_model_for`).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        threads: int | None = None,
        model: str | Path | bytes | None = None,
        cache: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LggsegError("--runtime onnx needs onnxruntime: pip install 'lggseg[onnx]'") from None
        source = onnx_model_for(bundle, cache) if model is None else model
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(source) if isinstance(source, Path) else source, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            where = source if isinstance(source, (str, Path)) else "exported model"
            raise LggsegError(f"{where}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None
        self.stride = 2**bundle.config.depth
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch: ``(B, C, H, W)`` float32 -> ``(B, 1, H, W)`` float32 probabilities.

        H and W that are not multiples of the stride are padded (reflect, or edge for tiny
        inputs) like :class:`lggseg.model.unet.UNet` does, and the output is cropped back.
        """
        h, w = batch.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if pad_h or pad_w:
            widths = ((0, 0), (0, 0), (0, pad_h), (0, pad_w))
            x = np.pad(x, widths, mode="reflect") if pad_h < h and pad_w < w else np.pad(x, widths, mode="edge")
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return out[..., :h, :w] if pad_h or pad_w else out
