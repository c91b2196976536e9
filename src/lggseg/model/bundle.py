"""Model files: safetensors only (no pickle path exists), self-describing through metadata.

A weights file holds the U-Net's tensors and, in the safetensors header metadata:
``format`` (= ``lggseg-unet``), ``model`` (the :class:`UNetConfig` as JSON), ``postprocess``
(the :class:`PostProcess` chosen on validation, as JSON), ``tta`` (``flip`` or ``none``) and
``info`` (free JSON: fold, epoch, validation Dice...). Loading checks the format, the
architecture, every tensor name and shape, and optionally the file's SHA-256.

Loading checks before it builds or allocates anything (a hostile file costs nothing):

1. the path must be a regular file of at most :data:`MAX_WEIGHTS_BYTES` (a FIFO or ``/dev/zero``
   is refused at once, without reading); it is read once, and hashed and parsed from that copy;
2. the safetensors header length must fit the file and :data:`MAX_HEADER_BYTES`; pickles are
   recognised and never unpickled;
3. the metadata is validated against sane bounds (:func:`unet_config_from`,
   :meth:`PostProcess.__post_init__`, :data:`TTA_MODES`): integer widths and depth within
   :data:`MAX_BASE_WIDTH` and the U-Net's range, channels within 1..16, a finite dropout in
   [0, 1), a finite threshold in (0, 1), non-negative integers ``min_component``,
   ``min_slice_area``, ``min_extent`` and ``min_end_core``, ``min_peak`` in [0, 1), and at most
   :data:`MAX_PARAMETERS` parameters (counted on PyTorch's ``meta`` device, which allocates nothing);
4. every tensor's name, shape and dtype must match that architecture, from the header alone;
5. only then are the tensors deserialised and the model built.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import struct
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lggseg.errors import LggsegError
from lggseg.io.atomic import atomic_path
from lggseg.io.budget import read_regular
from lggseg.model.unet import UNet, UNetConfig

FORMAT = "lggseg-unet"
SHIPPED_NAME = "lggseg_unet.safetensors"
BEST_NAME = "best.safetensors"
"""The deliverable weights of a run folder (``--weights RUN`` means ``RUN/best.safetensors``)."""

MAX_WEIGHTS_BYTES = 1 << 30
"""Weights files larger than this (1 GiB) are refused before they are read."""
MAX_HEADER_BYTES = 100 << 20
"""Largest safetensors JSON header (the limit of the safetensors library itself)."""
MAX_BASE_WIDTH = 256
MAX_CHANNELS = 32
"""Most input or output channels (lggseg's widest input: 2.5D with 2 slices each side, mirrored, is 30)."""
MAX_PARAMETERS = 100_000_000
"""Largest model accepted (400 MB of float32), counted before anything is allocated."""
TTA_MODES = ("none", "flip")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass(frozen=True)
class PostProcess:
    """How probabilities become a mask; chosen on validation patients, stored with the weights.

    threshold: probability above which a voxel is tumor.
    min_component: 3D components with fewer voxels are removed (0 keeps all).
    min_peak: 3D components whose highest probability is below this are removed (0 keeps all).
    min_slice_area: an axial slice whose predicted area is under this many pixels is cleared (0 keeps
        all): the stray specks that make a tumor-free slice count as a false positive.
    min_extent: 3D components spanning fewer than this many axial slices are removed (0 keeps all):
        the confident blobs confined to one or two slices that a tumor of 500 voxels or more never is.
    min_end_core: a kept 3D component loses its end slices, from the top and the bottom inward,
        while the slice holds fewer than this many of its pixels at probability 0.9 or more (0 trims
        nothing); a component always keeps at least one slice. It cuts the unsure slice or two by
        which a tumor is often drawn longer than its annotation.
    fill_holes: last, every background region that a slice's predicted mask encloses in-plane is
        filled: the dark center (a resection cavity, a cyst) that annotators draw as part of the
        abnormality while the network may outline only its bright FLAIR rim. It only adds pixels to
        slices that already hold a prediction, so it never adds a false-positive slice.
    keep_largest: legacy; keep only the largest 3D component (see :mod:`lggseg.infer.postprocess`).
    """

    threshold: float = 0.5
    min_component: int = 0
    keep_largest: bool = False
    min_peak: float = 0.0
    min_slice_area: int = 0
    min_extent: int = 0
    min_end_core: int = 0
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if not _is_real(self.threshold) or not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be a number in (0, 1), got {self.threshold!r}")
        if not _is_int(self.min_component) or not 0 <= int(self.min_component) <= 2**31:
            raise ValueError(f"min_component must be an integer >= 0, got {self.min_component!r}")
        if not isinstance(self.keep_largest, bool):
            raise ValueError(f"keep_largest must be true or false, got {self.keep_largest!r}")
        if not isinstance(self.fill_holes, bool):
            raise ValueError(f"fill_holes must be true or false, got {self.fill_holes!r}")
        if not _is_real(self.min_peak) or not 0.0 <= float(self.min_peak) < 1.0:
            raise ValueError(f"min_peak must be a number in [0, 1), got {self.min_peak!r}")
        if not _is_int(self.min_slice_area) or not 0 <= int(self.min_slice_area) <= 2**31:
            raise ValueError(f"min_slice_area must be an integer >= 0, got {self.min_slice_area!r}")
        if not _is_int(self.min_extent) or not 0 <= int(self.min_extent) <= 2**16:
            raise ValueError(f"min_extent must be an integer >= 0, got {self.min_extent!r}")
        if not _is_int(self.min_end_core) or not 0 <= int(self.min_end_core) <= 2**31:
            raise ValueError(f"min_end_core must be an integer >= 0, got {self.min_end_core!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_rules(self) -> int:
        """How many cleanup rules are switched on (the simplicity order used for ties)."""
        switches = (self.min_component > 0, self.min_peak > 0, self.keep_largest, self.min_slice_area > 0)
        return sum(switches) + int(self.min_extent > 0) + int(self.min_end_core > 0) + int(self.fill_holes)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model with everything needed to predict as it was validated (never mutated)."""

    model: UNet
    post: PostProcess
    tta: str
    info: dict[str, Any]
    sha256: str
    path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> UNetConfig:
        return self.model.config


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a weights file (a regular file of at most :data:`MAX_WEIGHTS_BYTES`)."""
    return hashlib.sha256(read_weights_file(Path(path))).hexdigest()


def read_weights_file(path: Path) -> bytes:
    """The bytes of a weights file; FIFOs, devices, folders and oversized files are refused unread."""
    return read_regular(path, str(path), MAX_WEIGHTS_BYTES, "a weights file")


def save_weights(
    path: str | Path,
    model: torch.nn.Module,
    post: PostProcess | None = None,
    tta: str = "none",
    info: dict[str, Any] | None = None,
) -> None:
    """Atomically write ``model`` (a :class:`UNet`) with its metadata as safetensors."""
    from safetensors.torch import save

    unet: Any = getattr(model, "module", model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "model": json.dumps(unet.config.to_dict()),
        "postprocess": json.dumps((post or PostProcess()).to_dict()),
        "tta": tta,
        "info": json.dumps(info or {}),
    }
    data = save(tensors, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)  # not save_file: it recreates the file with mode 0600, unreadable to others


def shipped_weights_path() -> Path:
    """Path of the model shipped inside the package."""
    return Path(str(resources.files("lggseg.model").joinpath("weights").joinpath(SHIPPED_NAME)))


def shipped_sha256() -> str:
    """The SHA-256 recorded for the shipped model when it was committed."""
    name = SHIPPED_NAME + ".sha256"
    try:
        fields = resources.files("lggseg.model").joinpath("weights").joinpath(name).read_text().split()
    except OSError:
        fields = []
    if not fields or len(fields[0]) != 64:
        raise LggsegError(
            f"the shipped model's recorded hash ({name}) is missing or malformed; the installation is damaged"
        )
    return fields[0].lower()


def resolve_weights(path: str | Path | None) -> tuple[Path, str | None]:
    """Map a ``--weights`` value to a file and its expected SHA-256 (only for the shipped model).

    None -> the shipped model; a run folder -> its ``best.safetensors``.
    """
    if path is None:
        shipped = shipped_weights_path()
        if not shipped.exists():
            raise LggsegError("no shipped model in this installation; pass --weights")
        return shipped, shipped_sha256()
    path = Path(path)
    if path.is_dir():
        path = path / BEST_NAME
    if not path.exists():
        raise LggsegError(f"{path}: weights file not found")
    return path, None


def _parse_header(data: bytes, path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``({tensor: {dtype, shape, data_offsets}}, metadata)`` from a safetensors file's bytes, checked."""
    bad = f"{path}: not a valid safetensors weights file"
    # a zip (torch.save), a pickle PROTO opcode with protocol 2-5, or a protocol-0/1 opening byte; the
    # first byte of a safetensors file is its header length's low byte, so "{" at offset 8 decides
    pickle_like = data.startswith(b"PK\x03\x04") or data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    pickle_like = pickle_like or data[:1] in (b"(", b"c", b"]", b"}")
    if pickle_like and data[8:9] != b"{":
        raise LggsegError(
            f"{path}: looks like a PyTorch/pickle checkpoint, not safetensors; lggseg never unpickles model files "
            "(unpickling can run code). Convert it with safetensors.torch.save_file in a trusted environment"
        )
    if len(data) < 10:
        raise LggsegError(f"{bad} ({len(data)} bytes)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise LggsegError(f"{bad} (header of {length} bytes in a file of {len(data)})")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LggsegError(f"{bad} (header is not JSON: {type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise LggsegError(f"{bad} (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LggsegError(f"{bad} (metadata is not a map of strings)")
    body = len(data) - 8 - length
    for name, entry in header.items():
        try:
            begin, end = (int(n) for n in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
            size = math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise LggsegError(f"{bad} (tensor {name!r} is badly described)") from None
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= body or end - begin != size:
            raise LggsegError(f"{bad} (tensor {name!r} lies outside the file or has the wrong size)")
    return header, metadata


def _deserialize(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises SafetensorError on a bad layout
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{path}: not a valid safetensors weights file ({reason})") from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata; any non-safetensors content is refused, never unpickled."""
    data = read_weights_file(Path(path))
    _, metadata = _parse_header(data, Path(path))
    return _deserialize(data, Path(path)), metadata


def unet_config_from(text: str) -> UNetConfig:
    """The :class:`UNetConfig` in a weights file's ``model`` metadata, checked against sane bounds (ValueError)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("the model metadata is not a JSON object")
    known = {f.name for f in fields(UNetConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown architecture keys {unknown}")
    for name in ("in_channels", "out_channels", "base_width", "depth", "context_slices"):
        if name in raw and not _is_int(raw[name]):
            raise ValueError(f"{name} must be an integer, got {raw[name]!r}")
    if "mirror" in raw and not isinstance(raw["mirror"], bool):
        raise ValueError(f"mirror must be true or false, got {raw['mirror']!r}")
    if "dropout" in raw and not _is_real(raw["dropout"]):
        raise ValueError(f"dropout must be a finite number, got {raw['dropout']!r}")
    config = UNetConfig(**raw)  # its own checks: depth 1..6, dropout in [0, 1), widths >= 1
    if not 1 <= config.in_channels <= MAX_CHANNELS or not 1 <= config.out_channels <= MAX_CHANNELS:
        raise ValueError(
            f"channels must be between 1 and {MAX_CHANNELS}, got {config.in_channels} in, {config.out_channels} out"
        )
    if config.base_width > MAX_BASE_WIDTH:
        raise ValueError(f"base_width must be at most {MAX_BASE_WIDTH}, got {config.base_width}")
    return config


def _expected_shapes(config: UNetConfig, path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the architecture, from a model on the ``meta`` device (nothing is allocated)."""
    with torch.device("meta"):
        skeleton = UNet(config)
    parameters = sum(p.numel() for p in skeleton.parameters())
    if parameters > MAX_PARAMETERS:
        raise LggsegError(
            f"{path}: bad model metadata (the architecture has {parameters} parameters, limit {MAX_PARAMETERS})"
        )
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def load_weights(path: str | Path | None = None, expected_sha256: str | None = None) -> ModelBundle:
    """Load and validate a weights file (None -> the shipped model, hash-checked); see the module docstring."""
    file, shipped_hash = resolve_weights(path)
    expected = expected_sha256 or shipped_hash
    data = read_weights_file(file)
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise LggsegError(
            f"{file}: SHA-256 {actual[:12]}... does not match the expected {expected[:12]}...; the file is damaged or "
            "replaced"
        )
    header, metadata = _parse_header(data, file)
    if metadata.get("format") != FORMAT:
        raise LggsegError(f"{file}: not an lggseg U-Net weights file (format={metadata.get('format')!r})")
    try:
        config = unet_config_from(metadata["model"])
        post_raw = json.loads(metadata.get("postprocess", "{}"))
        if not isinstance(post_raw, dict):
            raise ValueError("the postprocess metadata is not a JSON object")
        post = PostProcess(**post_raw)
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise LggsegError(
            f"{file}: bad model metadata ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    tta = metadata.get("tta", "none")
    if tta not in TTA_MODES:
        raise LggsegError(f"{file}: unknown test-time augmentation {tta!r}")
    expected_shapes = _expected_shapes(config, file)
    got_shapes = {k: tuple(int(n) for n in v["shape"]) for k, v in header.items()}
    if expected_shapes.keys() != got_shapes.keys():
        missing = sorted(expected_shapes.keys() - got_shapes.keys())
        unexpected = sorted(got_shapes.keys() - expected_shapes.keys())
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise LggsegError(f"{file}: tensors do not match the U-Net architecture ({detail})")
    for key, shape in expected_shapes.items():
        if got_shapes[key] != shape:
            raise LggsegError(f"{file}: tensor {key} has shape {got_shapes[key]}, the architecture needs {shape}")
        if header[key]["dtype"] not in ("F32", "F16", "BF16", "F64", "I64"):
            raise LggsegError(f"{file}: tensor {key} has dtype {header[key]['dtype']}, expected floating point")
    tensors = _deserialize(data, file)
    del data
    model = UNet(config)
    model.load_state_dict(tensors)
    model.eval()
    return ModelBundle(model, post, tta, info, actual, file)
