"""A classic 2D U-Net (Ronneberger et al. 2015) that returns logits.

Each level is two [3x3 conv -> BatchNorm -> ReLU] blocks; the encoder halves the size with 2x2
max-pooling ``depth`` times, the decoder doubles it with 2x2 transposed convolutions and
concatenates the skip connection. Widths double per level from ``base_width``.

The network is fully convolutional: inputs whose H or W is not a multiple of ``2**depth`` are
reflect-padded and the output is cropped back, so any input size works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net; stored in every weights file so it describes itself.

    context_slices: neighbouring slices on each side given as extra channels (2.5D input). With
    ``c`` of them the input holds ``2c + 1`` slices of 3 channels each, ordered from inferior to
    superior, so ``in_channels`` must be ``3 * (2c + 1)``; 0 is the plain 2D input.

    mirror: the input also holds those channels mirrored left-right about the head's midline
    (:func:`lggseg.infer.preprocess.mirror_channels`), after them: ``in_channels`` doubles to
    ``6 * (2c + 1)``. The mirroring is preprocessing, outside the network.
    """

    in_channels: int = 3
    out_channels: int = 1
    base_width: int = 16
    depth: int = 4
    dropout: float = 0.0
    context_slices: int = 0
    mirror: bool = False

    @property
    def lggseg_channels(self) -> int:
        """The channel count of lggseg's own input for this context and mirror setting."""
        return 3 * (2 * self.context_slices + 1) * (2 if self.mirror else 1)

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        if not 0 <= self.context_slices <= 2:
            raise ValueError(f"context_slices must be 0, 1 or 2, got {self.context_slices}")
        if not isinstance(self.mirror, bool):
            raise ValueError(f"mirror must be true or false, got {self.mirror!r}")
        if (self.context_slices or self.mirror) and self.in_channels != self.lggseg_channels:
            slices = f"3 channels x {2 * self.context_slices + 1} slices" + (" x 2 (mirrored)" if self.mirror else "")
            raise ValueError(
                f"context_slices {self.context_slices}{' with mirror' if self.mirror else ''} needs in_channels "
                f"{self.lggseg_channels} ({slices}), got {self.in_channels}"
            )
        if self.base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {self.base_width}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class DoubleConv(nn.Sequential):
    """[3x3 conv -> BN -> ReLU] x 2, optional dropout between them. ``(B, Cin, H, W) -> (B, Cout, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers += [
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        super().__init__(*layers)


class Up(nn.Module):
    """Upsample 2x (transposed conv), concatenate the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(out_channels * 2, out_channels, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Classic U-Net.

    forward: ``(B, in_channels, H, W)`` float -> ``(B, out_channels, H, W)`` logits.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        cfg = self.config
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        deep_dropout = [cfg.dropout if i >= cfg.depth - 1 else 0.0 for i in range(cfg.depth + 1)]
        self.stem = DoubleConv(cfg.in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1], deep_dropout[i + 1]) for i in range(cfg.depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], deep_dropout[i]) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

    @property
    def stride(self) -> int:
        """Input sizes that are multiples of this need no padding."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            y = block(y, skips.pop())
        return self.head(y)[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
