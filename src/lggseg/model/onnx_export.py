"""ONNX export: the U-Net with its sigmoid, as a self-describing ``.onnx`` file.

The exported graph:

* input ``image``: ``(batch, in_channels, height, width)`` float32, *normalised* intensities (see
  :data:`PREPROCESSING`; 3 channels, or 3 per slice for a 2.5D model); ``batch`` is dynamic,
  ``height`` and ``width`` are dynamic multiples of the network stride (``2**depth``, 16 for the
  shipped model). Pad other sizes before the call.
* output ``probability``: ``(batch, 1, height, width)`` float32 tumor probabilities (the sigmoid
  is inside the graph). Thresholding, 3D component cleanup and flip TTA are *not* in the graph;
  their settings are stored in the metadata (``postprocess``, ``tta``) so any runtime can
  reproduce ``lggseg predict``.

Metadata (``metadata_props``): ``lggseg_onnx_format``, ``lggseg_version``, ``weights_sha256``,
``model`` (the :class:`~lggseg.model.UNetConfig` as JSON), ``stride``, ``postprocess``, ``tta``,
``info``, ``preprocessing``, ``input``, ``output``.

``onnx`` and ``onnxscript`` are imported only here, when an export is asked for.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lggseg.errors import LggsegError
from lggseg.io import atomic
from lggseg.model.bundle import ModelBundle, load_weights
from lggseg.version import __version__

if TYPE_CHECKING:
    import onnx

ONNX_FORMAT = "lggseg-unet-onnx/1"
"""Version tag of the exported graph's contract (input, output, metadata); bump when it changes."""

INPUT_NAME = "image"
OUTPUT_NAME = "probability"

PREPROCESSING = (
    "Input channels (pre-contrast, FLAIR, post-contrast) on a 256x256 grid, as float32 (B, 3, H, W). "
    "Normalise per volume and per channel: take the voxels > 0 of the whole patient volume "
    "(all voxels if fewer than 64), clip to their [0.5, 99.5] percentiles, subtract the mean and "
    "divide by the standard deviation of the clipped values (std < 1e-3 -> 1). A slice given alone "
    "uses its own statistics. H and W must be multiples of the stride; pad (reflect) and crop back otherwise. "
    "A 2.5D model (context_slices c > 0 in the model metadata) takes 3 (2c + 1) channels: the three channels "
    "of slices z - c ... z + c in that order, each normalised with the volume's statistics; at either end of "
    "the volume the end slice stands in for the missing neighbours."
)


class ProbabilityNet(nn.Module):
    """The U-Net followed by a sigmoid: ``(B, C, H, W)`` -> ``(B, out_channels, H, W)`` probabilities."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet(x))


def onnx_metadata(bundle: ModelBundle) -> dict[str, str]:
    """The ``metadata_props`` written into an exported model (all values are strings)."""
    config = bundle.config
    return {
        "lggseg_onnx_format": ONNX_FORMAT,
        "lggseg_version": __version__,
        "weights_sha256": bundle.sha256,
        "model": json.dumps(config.to_dict()),
        "stride": str(2**config.depth),
        "postprocess": json.dumps(bundle.post.to_dict()),
        "tta": bundle.tta,
        "info": json.dumps(bundle.info),
        "preprocessing": PREPROCESSING,
        "input": (
            f"{INPUT_NAME}: float32 (batch, {config.in_channels}, height, width), normalised; height and width "
            f"multiples of {2**config.depth}"
        ),
        "output": (
            f"{OUTPUT_NAME}: float32 (batch, {config.out_channels}, height, width), sigmoid probabilities; "
            "threshold with postprocess.threshold"
        ),
    }


def _rename_dims(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Give the exporter's symbolic dimensions (``16*s1``...) readable names, everywhere in the graph."""
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def build_onnx(bundle: ModelBundle, opset: int | None = None) -> onnx.ModelProto:
    """Trace ``bundle``'s U-Net + sigmoid with the dynamo exporter into a checked ONNX model.

    Batch and spatial sizes are dynamic (spatial sizes as multiples of the stride).
    Batch-norm is folded into the convolutions by the exporter's optimiser. An ensemble bundle
    (:mod:`lggseg.infer.ensemble`) is refused: its ``model`` is only its first member.
    """
    members = bundle.info.get("ensemble")
    if members:
        raise LggsegError(
            f"{bundle.path}: an ensemble of {len(members)} models is not one network and cannot be exported; "
            "export one member's weights file"
        )
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise LggsegError(
            f"ONNX export needs the onnx extra: pip install 'lggseg[onnx]' ({exc.name} is missing)"
        ) from None
    from torch.export import Dim

    config = bundle.config
    stride = 2**config.depth
    net = ProbabilityNet(bundle.model).eval()
    batch, rows, cols = Dim("batch", min=1), Dim("rows", min=1), Dim("cols", min=1)
    example = torch.zeros(2, config.in_channels, 2 * stride, 2 * stride)
    quiet = ["torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript"]
    levels = {name: logging.getLogger(name).level for name in quiet}
    try:
        for name in quiet:  # the exporter logs torchvision-missing notices and per-pass chatter
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch, 2: stride * rows, 3: stride * cols},),
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert program is not None  # dynamo=True always returns a program
    model = program.model_proto
    graph_input = model.graph.input[0].type.tensor_type.shape.dim
    _rename_dims(
        model,
        {graph_input[0].dim_param: "batch", graph_input[2].dim_param: "height", graph_input[3].dim_param: "width"},
    )
    model.doc_string = (
        "lggseg U-Net (lower-grade glioma FLAIR abnormality): normalised (B,3,H,W) -> probability (B,1,H,W)"
    )
    del model.metadata_props[:]
    for key, value in onnx_metadata(bundle).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(weights: str | Path | None, out_path: str | Path, opset: int | None = None) -> Path:
    """Export ``weights`` (None -> the shipped model) to ``out_path`` atomically; returns the path.

    Raises :class:`LggsegError` for a missing output folder, an output path that is a folder,
    and for weights that are missing, damaged or not an lggseg U-Net.
    """
    out = Path(out_path)
    if out.is_dir():
        raise LggsegError(f"{out}: is a folder; --out needs a file name such as {out / 'lggseg_unet.onnx'}")
    if not out.parent.is_dir():
        raise LggsegError(f"{out}: the folder {out.parent} does not exist; create it first")
    bundle = load_weights(weights)
    model = build_onnx(bundle, opset)
    write_model(model, out)
    return out


def write_model(model: onnx.ModelProto, out: Path) -> None:
    """Atomically save ``model`` as one self-contained file (no external data)."""
    import onnx

    try:
        atomic.write_with(out, lambda tmp: onnx.save_model(model, str(tmp)))
    except OSError as exc:
        raise LggsegError(f"{out}: cannot write the ONNX file ({exc.strerror or exc})") from None
