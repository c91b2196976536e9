"""Inference preprocessing speed, side by side in one run: table lookup vs normalising each stack.

``volume_batches`` builds a volume's network input batch by batch. It normalises each slice once,
by lookup in a 256-entry table per channel (the raw intensities are uint8), then gathers each
slice's 2.5D neighbourhood and, for a mirror model, the mirrored channels. The way before it
(composed here from the same module's functions) stacked the raw neighbourhoods first
(``context_stack``), mirrored them (``mirror_channels``) and normalised the stack with
``normalize``, so each slice was normalised 2c + 1 times (twice more with the mirror). Both give
the same tensors bit for bit (``tests/infer/test_preprocess.py``); this checks that again and
reports seconds per volume for the two ways, for a plain and a mirror 2.5D input, and the ratio.

    python benchmarks/preprocess.py [--repeat 5] [--slices 100]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Iterator

import numpy as np
import torch

from lggseg.data.bundled import sample_root
from lggseg.data.dataset import index_dataset, load_volume
from lggseg.infer import runtime
from lggseg.infer.preprocess import (
    context_stack,
    mirror_channels,
    normalize,
    tile_stats,
    volume_batches,
    volume_midline,
    volume_stats,
)

CONTEXT = 1  # the shipped 2.5D input: each slice with one neighbour on either side
BATCH = 8  # the Segmenter's default batch


def stacked_then_normalised(images: np.ndarray, mirror: bool) -> Iterator[torch.Tensor]:
    """The way before: raw neighbourhoods stacked (and mirrored), then the stack normalised."""
    stats = tile_stats(torch.from_numpy(volume_stats(images)), CONTEXT)
    midline = volume_midline(images) if mirror else 0.0
    if mirror:
        stats = stats.repeat(1, 2)
    for start in range(0, images.shape[0], BATCH):
        raw = context_stack(images, start, start + BATCH, CONTEXT)
        yield normalize(mirror_channels(raw, midline) if mirror else raw, stats)


def looked_up(images: np.ndarray, mirror: bool) -> Iterator[torch.Tensor]:
    """The way now: :func:`volume_batches`."""
    return (x for _, x in volume_batches(images, CONTEXT, BATCH, mirror=mirror))


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each way, alternating; the best counts")
    parser.add_argument("--slices", type=int, default=100, help="volume depth (the bundled patient, repeated)")
    args = parser.parse_args()
    runtime.tune_malloc()
    patient = index_dataset(sample_root()).patients[0]
    images = load_volume(patient).images
    images = np.concatenate([images] * -(-args.slices // len(images)))[: args.slices]  # (Z, 256, 256, 3) uint8
    threads = torch.get_num_threads()
    print(f"{patient.name}, repeated to {len(images)} slices; context {CONTEXT}, batch {BATCH}; {threads} threads")
    print(f"{'input':<18}{'before s':>10}{'now s':>10}{'x faster':>10}  same tensors")
    for mirror in (False, True):
        same = all(
            torch.equal(a, b) for a, b in zip(stacked_then_normalised(images, mirror), looked_up(images, mirror))
        )
        before = now = float("inf")
        for _ in range(args.repeat):  # alternate, so that drift in machine load hits both ways alike
            before = min(before, seconds(lambda m=mirror: list(stacked_then_normalised(images, m))))
            now = min(now, seconds(lambda m=mirror: list(looked_up(images, m))))
        name = "2.5D + mirror" if mirror else "2.5D"
        print(f"{name:<18}{before:>10.3f}{now:>10.3f}{before / now:>10.2f}  {same}")


if __name__ == "__main__":
    main()
