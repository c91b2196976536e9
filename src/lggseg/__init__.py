"""lggseg: FLAIR-abnormality segmentation of lower-grade glioma in brain MRI with a U-Net.

The public API is imported lazily, so ``import lggseg`` (and ``lggseg --help``) does not load torch::

    from lggseg import Segmenter
    mask = Segmenter.from_weights().segment(images)  # (Z, H, W, 3) uint8 -> (Z, H, W) bool
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lggseg.errors import LggsegError
from lggseg.version import __version__

if TYPE_CHECKING:
    from lggseg.infer.segmenter import InferenceConfig, Segmenter
    from lggseg.model.bundle import PostProcess, load_weights
    from lggseg.model.unet import UNet
    from lggseg.train.config import TrainConfig

_LAZY = {
    "Segmenter": "lggseg.infer.segmenter",
    "InferenceConfig": "lggseg.infer.segmenter",
    "load_weights": "lggseg.model.bundle",
    "PostProcess": "lggseg.model.bundle",
    "UNet": "lggseg.model.unet",
    "TrainConfig": "lggseg.train.config",
}

__all__ = [
    "InferenceConfig",
    "LggsegError",
    "PostProcess",
    "Segmenter",
    "TrainConfig",
    "UNet",
    "__version__",
    "load_weights",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lggseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
