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

An **ensemble** (:mod:`lggseg.infer.ensemble`: the accurate mode, a CV folder, an ensemble folder)
exports as one graph that averages its members' probabilities (:class:`EnsembleProbabilityNet`),
exactly as ``lggseg predict`` does: the input carries the widest member context ``c``
(``3 (2c + 1)`` channels), each member reads the channels of its own slices, and a member
calibrated with flip TTA also runs on the mirrored image inside the graph. ``model`` then names the
member whose input the graph takes (the widest context), ``stride`` is the largest member stride,
``weights_sha256`` is the ensemble's digest of its members' hashes, and ``ensemble`` lists each
member (``sha256``, ``model``, ``tta``, ``channels``: the input channels it reads). Members trained
on FLAIR alone take another input and cannot share the graph's; such an ensemble is refused.

``onnx`` and ``onnxscript`` are imported only here, when an export is asked for.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lggseg.errors import LggsegError
from lggseg.io import atomic
from lggseg.model.bundle import ModelBundle
from lggseg.model.unet import UNetConfig
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
    "the volume the end slice stands in for the missing neighbours. A mirror model (mirror true in the model "
    "metadata) takes twice those channels: after them, the same channels mirrored left-right about the head's "
    "midline column m (column x shows column 2m - x, 0 before normalising where that is outside the image); m is "
    "the mean column of the volume's pixels whose FLAIR exceeds 0.1 x the 99.5th percentile of its FLAIR > 0, "
    "rounded to the nearest half pixel."
)


class ProbabilityNet(nn.Module):
    """The U-Net followed by a sigmoid: ``(B, C, H, W)`` -> ``(B, out_channels, H, W)`` probabilities."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet(x))


class EnsembleProbabilityNet(nn.Module):
    """Members averaged: ``(B, 3 (2c + 1), H, W)`` -> ``(B, 1, H, W)`` mean probability (c: widest context).

    Member ``k`` with context ``c_k`` reads channels ``3 (c - c_k)`` to ``3 (c + c_k + 1)``: its own
    slices, centred on the predicted one. A member whose ``tta`` is ``flip`` averages its
    probabilities on the image and on the image mirrored left-right (mirrored back), as
    :meth:`lggseg.infer.segmenter.Segmenter.grid_probabilities` does.
    """

    def __init__(self, members: Sequence[ModelBundle]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(member.model for member in members)
        self.windows = member_channels(members)
        self.flips = [member.tta == "flip" for member in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(x[:, :1])
        for net, (start, stop), flip in zip(self.nets, self.windows, self.flips):
            own = x[:, start:stop]
            prob = torch.sigmoid(net(own))
            if flip:
                prob = 0.5 * (prob + torch.sigmoid(net(own.flip(-1))).flip(-1))
            total = total + prob
        return total / len(self.nets)


def member_channels(members: Sequence[ModelBundle]) -> list[tuple[int, int]]:
    """Per member, the ``[start, stop)`` input channels it reads from an input of the widest context."""
    widest = max(member.config.context_slices for member in members)
    if any(member.config.mirror for member in members):  # _check_members: then all take the same input
        return [(0, member.config.in_channels) for member in members]
    return [(3 * (widest - m.config.context_slices), 3 * (widest + m.config.context_slices + 1)) for m in members]


def graph_input(bundle: ModelBundle, members: Sequence[ModelBundle] = ()) -> tuple[UNetConfig, int]:
    """The config whose input the graph takes and the graph's stride.

    One network: its own. An ensemble: the first member of the widest context, and the largest
    member stride (every member accepts its multiples).
    """
    if not members:
        return bundle.config, 2**bundle.config.depth
    widest = max(members, key=lambda member: member.config.context_slices)
    return widest.config, max(2**member.config.depth for member in members)


def _check_members(bundle: ModelBundle, members: Sequence[ModelBundle]) -> None:
    """Refuse members that cannot share one graph input and output."""
    for member in members:
        if member.info.get("input") == "flair_only":
            raise LggsegError(
                f"{bundle.path}: member {member.path} was trained on FLAIR alone, which takes another input; "
                "an ensemble exports as one graph only when its members share their input"
            )
        if member.config.out_channels != 1 or member.config.in_channels != member.config.lggseg_channels:
            raise LggsegError(f"{bundle.path}: member {member.path} is not a one-output lggseg U-Net")
    inputs = {(member.config.context_slices, member.config.mirror) for member in members}
    if len(inputs) > 1 and any(mirror for _, mirror in inputs):
        raise LggsegError(
            f"{bundle.path}: a mirror model's input interleaves no other member's; "
            "an ensemble with mirror members exports as one graph only when all members take the same input"
        )


def onnx_metadata(bundle: ModelBundle, members: Sequence[ModelBundle] = ()) -> dict[str, str]:
    """The ``metadata_props`` written into an exported model (all values are strings).

    ``members``: an ensemble's members (``bundle`` is then the ensemble's own bundle).
    """
    config, stride = graph_input(bundle, members)
    extra: dict[str, str] = {}
    if members:
        listed: list[dict[str, Any]] = [
            {"sha256": m.sha256, "model": m.config.to_dict(), "tta": m.tta, "channels": list(window)}
            for m, window in zip(members, member_channels(members))
        ]
        extra["ensemble"] = json.dumps(listed)
    return {
        "lggseg_onnx_format": ONNX_FORMAT,
        "lggseg_version": __version__,
        "weights_sha256": bundle.sha256,
        "model": json.dumps(config.to_dict()),
        "stride": str(stride),
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
            "threshold with postprocess.threshold" + (f"; the mean of {len(members)} networks" if members else "")
        ),
        **extra,
    }


def _rename_dims(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Give the exporter's symbolic dimensions (``16*s1``...) readable names, everywhere in the graph."""
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def build_onnx(bundle: ModelBundle, opset: int | None = None, members: Sequence[ModelBundle] = ()) -> onnx.ModelProto:
    """Trace ``bundle``'s U-Net + sigmoid with the dynamo exporter into a checked ONNX model.

    Batch and spatial sizes are dynamic (spatial sizes as multiples of the stride).
    Batch-norm is folded into the convolutions by the exporter's optimiser. For an ensemble bundle
    (:func:`lggseg.infer.ensemble.load_ensemble`) pass its ``members``: the graph averages them
    (:class:`EnsembleProbabilityNet`). An ensemble bundle without its members is refused, since its
    ``model`` is only its first member.
    """
    listed = bundle.info.get("ensemble")
    if listed and len(members) != len(listed):
        raise LggsegError(
            f"{bundle.path}: an ensemble of {len(listed)} models needs its members to be exported "
            "(load it with lggseg.infer.ensemble.load_ensemble)"
        )
    if members:
        _check_members(bundle, members)
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise LggsegError(
            f"ONNX export needs the onnx extra: pip install 'lggseg[onnx]' ({exc.name} is missing)"
        ) from None
    from torch.export import Dim

    config, stride = graph_input(bundle, members)
    net = (EnsembleProbabilityNet(members) if members else ProbabilityNet(bundle.model)).eval()
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
    input_dims = model.graph.input[0].type.tensor_type.shape.dim
    _rename_dims(
        model,
        {input_dims[0].dim_param: "batch", input_dims[2].dim_param: "height", input_dims[3].dim_param: "width"},
    )
    kind = f"mean of {len(members)} lggseg U-Nets" if members else "lggseg U-Net"
    model.doc_string = f"{kind} (lower-grade glioma FLAIR abnormality): normalised (B,C,H,W) -> probability (B,1,H,W)"
    del model.metadata_props[:]
    for key, value in onnx_metadata(bundle, members).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    bundle: ModelBundle, out_path: str | Path, members: Sequence[ModelBundle] = (), opset: int | None = None
) -> Path:
    """Export ``bundle`` (an ensemble's bundle with its ``members``: one graph averages them) to
    ``out_path`` atomically; returns the path.

    Raises :class:`LggsegError` for a missing output folder, an output path that is a folder, and
    for members that cannot share one graph.
    """
    out = check_out_path(out_path)
    model = build_onnx(bundle, opset, members)
    write_model(model, out)
    return out


def check_out_path(out_path: str | Path) -> Path:
    """``out_path`` as a :class:`Path` when an ONNX file can be written there, before any model is loaded.

    Raises :class:`LggsegError` for an output path that is a folder or whose folder does not exist.
    """
    out = Path(out_path)
    if out.is_dir():
        raise LggsegError(f"{out}: is a folder; --out needs a file name such as {out / 'lggseg_unet.onnx'}")
    if not out.parent.is_dir():
        raise LggsegError(f"{out}: the folder {out.parent} does not exist; create it first")
    return out


def write_model(model: onnx.ModelProto, out: Path) -> None:
    """Atomically save ``model`` as one self-contained file (no external data)."""
    import onnx

    try:
        atomic.write_with(out, lambda tmp: onnx.save_model(model, str(tmp)))
    except OSError as exc:
        raise LggsegError(f"{out}: cannot write the ONNX file ({exc.strerror or exc})") from None
