"""Training data in RAM: the patients of a fold, their slices as one bank, and each epoch's draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lggseg.data.dataset import Volume, index_dataset, load_volume
from lggseg.data.splits import FoldSplit, split_for_fold
from lggseg.errors import LggsegError
from lggseg.infer.preprocess import context_indices, stack_neighbourhood, tile_stats, volume_midline, volume_stats
from lggseg.io.progress import track
from lggseg.train.config import TrainConfig

VERTEX_SHARE = 0.2
"""The top fifth of a volume's slices counts as the vertex."""

END_REACH = 3
"""A tumor-free slice at most this many slices from a tumor slice of its volume lies past a tumor's
end: where the network tends to draw a tumor one to three slices longer than the annotation."""

SOFT_SCALE = 255
"""Teacher probabilities (distillation) are kept in RAM as ``uint8``: ``round(p * SOFT_SCALE)``."""


@dataclass
class SliceBank:
    """Training slices cached in RAM.

    images: ``(N, 256, 256, 3)`` uint8; masks: ``(N, 256, 256)`` bool; stats: ``(N, 4, 3)``
    float32 (the per-volume normalisation stats of each slice's patient); tumor: indices of
    slices with a non-empty mask; vertex: indices of tumor-free slices in the top
    :data:`VERTEX_SHARE` of their volume (slices run inferior to superior), where bright cortex
    and skull rim are most often taken for tumor; past_ends: indices of tumor-free slices within
    :data:`END_REACH` slices of a tumor slice of their volume; first, last: ``(N,)`` bank indices
    of the first and last slice of each slice's volume (the bounds of a 2.5D neighbourhood);
    volume_tumor_slices:
    ``(N,)`` how many tumor slices each slice's volume has (for patient-balanced tumor draws);
    midlines: ``(N,)`` float32, the head's midline column of each slice's volume (for mirror
    models, :func:`lggseg.infer.preprocess.volume_midline`); soft:
    ``(N, 256, 256)`` uint8 teacher probabilities x :data:`SOFT_SCALE`
    (distillation), or None.
    """

    images: torch.Tensor
    masks: torch.Tensor
    stats: torch.Tensor
    tumor: torch.Tensor
    vertex: torch.Tensor
    past_ends: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor
    volume_tumor_slices: torch.Tensor
    midlines: torch.Tensor
    soft: torch.Tensor | None = None

    @classmethod
    def from_volumes(cls, volumes: list[Volume]) -> SliceBank:
        images = np.concatenate([v.images for v in volumes])
        masks = np.concatenate([v.require_masks() for v in volumes])
        stats = np.concatenate([np.repeat(volume_stats(v.images)[None], len(v.images), 0) for v in volumes])
        has_tumor = masks.reshape(len(masks), -1).any(1)
        top = np.concatenate([np.arange(len(v.images)) >= (1 - VERTEX_SHARE) * len(v.images) for v in volumes])
        sizes = np.array([len(v.images) for v in volumes])
        ends = np.cumsum(sizes)
        tumor_counts = np.array([int(v.require_masks().reshape(len(v.images), -1).any(1).sum()) for v in volumes])
        near_tumor = np.concatenate([_near(t, END_REACH) for t in np.split(has_tumor, ends[:-1])])
        return cls(
            torch.from_numpy(images),
            torch.from_numpy(masks),
            torch.from_numpy(stats),
            torch.from_numpy(np.flatnonzero(has_tumor)),
            torch.from_numpy(np.flatnonzero(top & ~has_tumor)),
            torch.from_numpy(np.flatnonzero(near_tumor & ~has_tumor)),
            torch.from_numpy(np.repeat(ends - sizes, sizes)),
            torch.from_numpy(np.repeat(ends - 1, sizes)),
            torch.from_numpy(np.repeat(tumor_counts, sizes)),
            torch.from_numpy(np.repeat(np.array([volume_midline(v.images) for v in volumes], np.float32), sizes)),
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        """Targets of the slices ``idx`` (``(b,)``): ``(b, 1, 256, 256)`` float annotation, or with
        teacher probabilities ``(b, 2, 256, 256)`` (channel 1 in [0, 1])."""
        masks = self.masks[idx][:, None].float()
        if self.soft is None:
            return masks
        return torch.cat([masks, self.soft[idx][:, None].float() / SOFT_SCALE], 1)

    def inputs(self, idx: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw network input and normalisation stats of the slices ``idx`` (``(b,)``).

        Returns ``(b, 3 (2c + 1), 256, 256)`` float32 (neighbours clamped to each slice's own
        volume, as :func:`lggseg.infer.preprocess.context_stack` does at inference) and
        ``(b, 4, 3 (2c + 1))`` stats.
        """
        if context == 0:
            return self.images[idx].permute(0, 3, 1, 2).float(), self.stats[idx]
        first = self.first[idx].numpy()
        depth = (self.last[idx] + 1).numpy() - first
        near = first[:, None] + context_indices(idx.numpy() - first, depth[:, None], context)
        return stack_neighbourhood(self.images[torch.from_numpy(near)]), tile_stats(self.stats[idx], context)


def _near(flags: np.ndarray, reach: int) -> np.ndarray:
    """``(Z,)`` bool: slices at most ``reach`` slices from a ``True`` slice of ``flags`` (``(Z,)``)."""
    marked = np.flatnonzero(flags)
    return (np.abs(np.arange(len(flags))[:, None] - marked[None, :]) <= reach).any(axis=1)


def draw_epoch(
    bank: SliceBank,
    n: int,
    fg_fraction: float,
    generator: torch.Generator,
    vertex_fraction: float = 0.0,
    tumor_balance: float = 0.0,
    end_fraction: float = 0.0,
) -> torch.Tensor:
    """Indices for one epoch: ``fg_fraction`` from tumor slices, ``vertex_fraction`` from tumor-free
    vertex slices and ``end_fraction`` from tumor-free slices past a tumor's end (hard negatives),
    the rest from all slices, shuffled.

    ``tumor_balance`` weighs each tumor slice by ``t ** -tumor_balance``, where ``t`` is the number of
    tumor slices of its volume: 0 draws every tumor slice equally often (large tumors, with many
    slices, dominate), 1 gives every patient the same share of the tumor draws (a small tumor's few
    slices weigh as much as a large tumor's many).
    """
    n_fg = int(round(n * fg_fraction)) if len(bank.tumor) else 0
    n_vertex = min(int(round(n * vertex_fraction)), n - n_fg) if len(bank.vertex) else 0
    n_end = min(int(round(n * end_fraction)), n - n_fg - n_vertex) if len(bank.past_ends) else 0
    if not n_fg:
        fg = torch.empty(0, dtype=torch.long)
    elif tumor_balance > 0:
        weights = bank.volume_tumor_slices[bank.tumor].double() ** -tumor_balance
        fg = bank.tumor[torch.multinomial(weights, n_fg, replacement=True, generator=generator)]
    else:  # the plain uniform draw, so runs from before the option resume bit for bit
        fg = bank.tumor[torch.randint(len(bank.tumor), (n_fg,), generator=generator)]
    parts = [fg]
    if n_vertex:  # no draw at all when off, so older runs resume bit for bit
        parts.append(bank.vertex[torch.randint(len(bank.vertex), (n_vertex,), generator=generator)])
    if n_end:  # likewise
        parts.append(bank.past_ends[torch.randint(len(bank.past_ends), (n_end,), generator=generator)])
    parts.append(torch.randint(len(bank), (n - n_fg - n_vertex - n_end,), generator=generator))
    return torch.cat(parts)[torch.randperm(n, generator=generator)]


def load_split_volumes(
    cfg: TrainConfig, log: Callable[[str], None], show_progress: bool = True
) -> tuple[FoldSplit, list[Volume], list[Volume]]:
    """Index the data, split it for the fold, and load train + validation volumes into RAM."""
    index = index_dataset(cfg.data)
    for problem in index.problems:
        log(f"data: {problem}")
    named = index.by_name()
    split = split_for_fold(sorted(named), cfg.fold, cfg.n_validation, cfg.split_seed, cfg.holdout)
    train_names = list(split.train)
    if cfg.max_train_patients:
        train_names = train_names[: cfg.max_train_patients]
    log(
        f"fold {cfg.fold}: {len(train_names)} train, {len(split.validation)} validation, {len(split.test)} test "
        "patients held out; "
        f"{split.skipped} patient(s) of the canonical split absent from the data folder"
    )

    names = train_names + list(split.validation)
    volumes = {}
    for name in track(names, description="loading slices") if show_progress else names:
        volume = load_volume(named[name])
        if volume.masks is None:
            raise LggsegError(f"{named[name].folder}: training patients need a mask for every slice")
        volumes[name] = volume
    return split, [volumes[n] for n in train_names], [volumes[n] for n in split.validation]
