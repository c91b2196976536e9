"""An exponential moving average of the U-Net's weights, for validation, the best checkpoint and shipping.

After every optimizer step, each floating-point parameter and buffer (BatchNorm running statistics
included) moves towards the trained network's: ``avg = d * avg + (1 - d) * current``, with
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first steps do not anchor the
average to the random initialisation. Integer buffers (BatchNorm's step counter) are copied. The
average is a second :class:`~lggseg.model.unet.UNet` of the same configuration that is never trained
itself; with ``ema_decay > 0`` it is the network that is validated, calibrated and saved as
``best.safetensors``. Averaging the weights of the last few epochs smooths the epoch-to-epoch noise
of a small training set, at no cost at inference.
"""

from __future__ import annotations

import copy

import torch

from lggseg.model.unet import UNet


class WeightAverage:
    """The running average of ``source``'s weights; ``model`` is a copy of ``source`` kept in eval mode."""

    def __init__(self, source: UNet, decay: float, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.model: UNet = copy.deepcopy(source).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update (warms up from 0.1 towards ``decay``)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, source: UNet) -> None:
        """Move the average one step towards ``source`` (same architecture)."""
        d = self.current_decay()
        averaged = self.model.state_dict()
        for name, value in source.state_dict().items():
            target = averaged[name]
            if target.is_floating_point():
                target.mul_(d).add_(value.detach().to(target.dtype), alpha=1.0 - d)
            else:
                target.copy_(value)
        self.updates += 1
