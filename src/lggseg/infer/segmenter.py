"""The one predict path: images of any size in, the post-processed mask on the same grid out.

``calibrate``, ``evaluate``, ``predict``, ``demo`` and ``serve`` all call :meth:`Segmenter.segment`
(calibration needs the probabilities, :meth:`Segmenter.probabilities`, which is the same path
before thresholding). For a volume ``(Z, H, W, 3)`` uint8:

1. slices that are not 256x256 are resized to the model grid (bilinear);
2. the volume is normalised with its own statistics (:mod:`lggseg.infer.preprocess`);
3. the backend predicts ``batch_size`` images per call (flip TTA when the weights ask for it); a
   2.5D model gets each slice with its neighbours as extra channels;
4. probabilities are resized back to ``H x W`` (bilinear) when the input was not 256x256;
5. the weights' :class:`~lggseg.model.bundle.PostProcess` turns them into a mask (threshold, 3D
   component cleanup).

An ensemble (:mod:`lggseg.infer.ensemble`) runs steps 1-4 for each member, with the input that
member takes, and thresholds the mean of their probabilities with the ensemble's own rule.

Memory is bounded by ``batch_size`` (images per network call, TTA flips included): only one batch
of activations is alive at a time, plus the ``(Z, H, W)`` result. At 8, a 200-slice volume peaks
~300 MB above the loaded model with bf16 (fp32: ~460 MB, ONNX Runtime: ~360 MB); at 16, ~580 MB
(fp32: ~870 MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lggseg.data.dataset import GRID, fit_to_grid, flair_only_fill, flair_only_images
from lggseg.errors import LggsegError
from lggseg.infer import postprocess
from lggseg.infer.backends import Backend, TorchBackend
from lggseg.infer.preprocess import volume_batches
from lggseg.model.bundle import ModelBundle

RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class InferenceConfig:
    """How inference runs; none of it changes the result beyond floating-point noise.

    runtime: ``torch`` or ``onnx`` (ONNX Runtime, CPU). device: ``auto``, ``cpu``, ``cuda``,
    ``cuda:1``... (torch only). bf16: ``auto``/``on``/``off`` autocast (torch only). threads:
    intra-op threads, 0 = the runtime's default. batch_size: images per network call.
    """

    runtime: str = "torch"
    device: str = "auto"
    bf16: str = "auto"
    threads: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise LggsegError(f"unknown runtime {self.runtime!r}; choose torch or onnx")
        if self.bf16 not in ("auto", "on", "off"):
            raise LggsegError(f"--bf16 must be auto, on or off, got {self.bf16!r}")
        if self.batch_size < 1:
            raise LggsegError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.threads < 0:
            raise LggsegError(f"--threads must be >= 0, got {self.threads}")
        if self.runtime == "onnx" and self.device not in ("auto", "cpu"):
            raise LggsegError(f"--runtime onnx runs on the CPU; --device {self.device} needs --runtime torch")

    def backend(self, bundle: ModelBundle) -> Backend:
        """Build the backend this config asks for."""
        if self.runtime == "onnx":
            from lggseg.infer.backends import OnnxBackend

            return OnnxBackend(bundle, threads=self.threads or None)
        try:
            return TorchBackend(bundle, self.device, self.bf16, self.threads or None)
        except RuntimeError as exc:  # e.g. an unknown or absent device
            raise LggsegError(f"--device {self.device}: {str(exc).splitlines()[0]}") from None


class Segmenter:
    """Loads the model once; :meth:`segment` maps a volume of any size to its mask.

    One network, or an ensemble (:mod:`lggseg.infer.ensemble`): ``members`` pairs each member's
    bundle with its backend, and :meth:`probabilities` is the mean of the members' probabilities,
    each computed from the input that member takes. ``bundle`` carries the rule applied to the mean.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        backend: Backend | None = None,
        config: InferenceConfig | None = None,
        members: Sequence[tuple[ModelBundle, Backend]] | None = None,
    ) -> None:
        self.bundle = bundle
        self.config = config or InferenceConfig()
        if members is None:
            members = [(bundle, backend or self.config.backend(bundle))]
        elif backend is not None or not members:
            raise ValueError("give either one backend or a non-empty list of members")
        self.members = list(members)

    @property
    def backend(self) -> Backend:
        """The network of a single-model segmenter (an ensemble's first member)."""
        return self.members[0][1]

    @classmethod
    def from_weights(cls, weights: str | Path | None = None, config: InferenceConfig | None = None) -> Segmenter:
        """Load weights (None -> the shipped model; a run folder -> its best weights; an ensemble,
        CV or weights folder -> their ensemble, see :mod:`lggseg.infer.ensemble`)."""
        from lggseg.infer import ensemble

        config = config or InferenceConfig()
        bundle, members = ensemble.load_model(weights)
        if members:
            return cls.of_members(bundle, members, config)
        return cls(bundle, config.backend(bundle), config)

    @classmethod
    def of_members(
        cls, bundle: ModelBundle, members: Sequence[ModelBundle], config: InferenceConfig | None = None
    ) -> Segmenter:
        """An ensemble of loaded ``members``, each on its own backend; ``bundle`` carries the rule for their mean."""
        config = config or InferenceConfig()
        return cls(bundle, config=config, members=[(m, config.backend(m)) for m in members])

    def segment(self, images: np.ndarray) -> np.ndarray:
        """images ``(Z, H, W, 3)`` uint8 of any H, W -> mask ``(Z, H, W)`` bool on the same grid."""
        return self.segment_with_probabilities(images)[1]

    def segment_with_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images ``(Z, H, W, 3)`` uint8 -> (probabilities ``(Z, H, W)`` float32, the mask
        :meth:`segment` gives ``(Z, H, W)`` bool), for callers that need both."""
        prob = self.probabilities(images)
        return prob, postprocess.apply(prob, self.bundle.post)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """images ``(Z, H, W, 3)`` uint8 of any H, W -> ``(Z, H, W)`` float32 probabilities (an
        ensemble: the mean of its members')."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise LggsegError(f"expected images of shape (Z, H, W, 3), got {images.shape}")
        total = self.member_probabilities(*self.members[0], images)
        for bundle, backend in self.members[1:]:
            total += self.member_probabilities(bundle, backend, images)
        if len(self.members) > 1:
            total /= len(self.members)
        return total

    def member_probabilities(self, bundle: ModelBundle, backend: Backend, images: np.ndarray) -> np.ndarray:
        """One network's ``(Z, H, W)`` float32 probabilities for images ``(Z, H, W, 3)`` uint8.

        A model trained on FLAIR alone (``info["input"] == "flair_only"``) is shown FLAIR alone
        (channel 1, filled as it was trained) whatever else the input holds.
        """
        if bundle.info.get("input") == "flair_only":
            images = flair_only_images(images[..., 1], flair_only_fill(bundle.info))
        shape = images.shape[1:3]
        if shape == (GRID, GRID):
            return self.grid_probabilities(bundle, backend, images)
        grid = np.stack([fit_to_grid(image, None)[0] for image in images])
        return resize_probabilities(self.grid_probabilities(bundle, backend, grid), shape)

    def grid_probabilities(self, bundle: ModelBundle, backend: Backend, images: np.ndarray) -> np.ndarray:
        """One network on images ``(Z, h, w, 3)`` uint8 as given (no resizing) -> ``(Z, h, w)`` float32,
        the volume normalised with its own stats."""
        flip = bundle.tta == "flip"
        out = np.empty(images.shape[:3], np.float32)
        batch = self.config.batch_size
        step = max(1, batch // 2 if flip else batch)  # slices per call: with their flips, ``batch`` images
        for start, x in volume_batches(images, bundle.config.context_slices, step, mirror=bundle.config.mirror):
            if flip:
                x = torch.cat([x, x.flip(-1)])
            prob = backend(np.ascontiguousarray(x.numpy()))[:, 0]
            if flip:
                n = prob.shape[0] // 2
                prob = 0.5 * (prob[:n] + prob[n:, :, ::-1])
            out[start : start + prob.shape[0]] = prob
        return out


def resize_probabilities(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(Z, h, w)`` -> ``(Z, H, W)`` by bilinear interpolation."""
    if prob.shape[1:] == tuple(shape):
        return prob
    resized = F.interpolate(torch.from_numpy(prob)[:, None], size=tuple(shape), mode="bilinear", align_corners=False)
    return resized[:, 0].numpy()
