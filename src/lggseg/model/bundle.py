"""Model files: safetensors only (no pickle path exists), self-describing through metadata.

A weights file holds the U-Net's tensors and, in the safetensors header metadata:
``format`` (= ``lggseg-unet``), ``model`` (the :class:`UNetConfig` as JSON), ``postprocess``
(the :class:`PostProcess` chosen on validation, as JSON), ``tta`` (``flip`` or ``none``) and
``info`` (free JSON: fold, epoch, validation Dice...). Loading checks the format, the
architecture, every tensor name and shape, and optionally the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lggseg.errors import LggsegError
from lggseg.io.atomic import atomic_path
from lggseg.model.unet import UNet, UNetConfig

FORMAT = "lggseg-unet"
SHIPPED_NAME = "lggseg_unet.safetensors"
BEST_NAME = "best.safetensors"
"""The deliverable weights of a run folder (``--weights RUN`` means ``RUN/best.safetensors``)."""


@dataclass(frozen=True)
class PostProcess:
    """How probabilities become a mask; chosen on validation patients, stored with the weights.

    threshold: probability above which a voxel is tumor.
    min_component: 3D components with fewer voxels are removed (0 keeps all).
    min_peak: 3D components whose highest probability is below this are removed (0 keeps all).
    keep_largest: legacy; keep only the largest 3D component (see :mod:`lggseg.infer.postprocess`).
    """

    threshold: float = 0.5
    min_component: int = 0
    keep_largest: bool = False
    min_peak: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_rules(self) -> int:
        """How many cleanup rules are switched on (the simplicity order used for ties)."""
        return int(self.min_component > 0) + int(self.min_peak > 0) + int(self.keep_largest)


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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata; any non-safetensors content is refused, never unpickled."""
    from safetensors import safe_open

    with open(path, "rb") as handle:
        head = handle.read(9)  # safetensors: 8-byte header length, then the JSON header's "{"
    pickle_like = head.startswith(b"PK\x03\x04") or head[:1] in (b"\x80", b"(", b"c", b"]", b"}")
    if pickle_like and head[8:9] != b"{":
        raise LggsegError(
            f"{path}: looks like a PyTorch/pickle checkpoint, not safetensors; lggseg never unpickles model files "
            "(unpickling can run code). Convert it with safetensors.torch.save_file in a trusted environment"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{path}: not a valid safetensors weights file ({reason})") from None
    return tensors, metadata


def load_weights(path: str | Path | None = None, expected_sha256: str | None = None) -> ModelBundle:
    """Load and validate a weights file (None -> the shipped model, hash-checked)."""
    file, shipped_hash = resolve_weights(path)
    expected = expected_sha256 or shipped_hash
    actual = sha256_of(file)
    if expected is not None and actual != expected:
        raise LggsegError(
            f"{file}: SHA-256 {actual[:12]}... does not match the expected {expected[:12]}...; the file is damaged or "
            "replaced"
        )
    tensors, metadata = read_safetensors(file)
    if metadata.get("format") != FORMAT:
        raise LggsegError(f"{file}: not an lggseg U-Net weights file (format={metadata.get('format')!r})")
    try:
        config = UNetConfig(**json.loads(metadata["model"]))
        post = PostProcess(**json.loads(metadata.get("postprocess", "{}")))
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise LggsegError(f"{file}: bad model metadata ({exc})") from None
    model = UNet(config)
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected_shapes.keys() != got_shapes.keys():
        missing = sorted(expected_shapes.keys() - got_shapes.keys())
        unexpected = sorted(got_shapes.keys() - expected_shapes.keys())
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise LggsegError(f"{file}: tensors do not match the U-Net architecture ({detail})")
    for key, shape in expected_shapes.items():
        if got_shapes[key] != shape:
            raise LggsegError(f"{file}: tensor {key} has shape {got_shapes[key]}, the architecture needs {shape}")
    model.load_state_dict(tensors)
    model.eval()
    tta = metadata.get("tta", "none")
    if tta not in ("none", "flip"):
        raise LggsegError(f"{file}: unknown test-time augmentation {tta!r}")
    return ModelBundle(model, post, tta, info, actual, file)
