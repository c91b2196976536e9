"""Augmentation speed, side by side in one run: patches cut inside the warp vs whole slices cut after.

Recipe v3 trains on 160 x 160 patches of 2.5D slices (16 x 9 x 256 x 256 a batch). ``augment(...,
crop_size=160)`` places each patch on the warped annotation, then resamples and processes only the
patch's pixels; the way before it augmented the whole slice, then cut the patch out (composed here
from the same functions: ``augment`` without ``crop_size``, then ``choose_windows``). Without noise
both give the same patches (``tests/train/test_augment.py``), except that a hard negative may be
centred on another of its equally bright pixels. Reports ms a batch and the ratio.

    python benchmarks/augment_speed.py [--batches 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lggseg.infer import runtime
from lggseg.train.augment import augment, choose_windows
from lggseg.train.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/lgg_unet12_v3.yaml", help="recipe whose augmentation is timed")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two ways this many times; best counts")
    args = parser.parse_args()
    runtime.tune_malloc()
    cfg = load_config(args.config)
    channels, size = 3 * (2 * cfg.model.context_slices + 1), cfg.crop_size
    torch.manual_seed(0)
    raw = torch.rand(cfg.batch_size, channels, 256, 256) * 255
    masks = torch.zeros(cfg.batch_size, 1, 256, 256)
    masks[::2, :, 100:140, 90:150] = 1  # half the batch with tumor, as fg_fraction 0.5 draws
    stats = torch.tensor([[0.0, 255.0, 100.0, 50.0]] * channels).T.expand(cfg.batch_size, 4, channels).contiguous()

    def inside(generator: torch.Generator) -> None:
        augment(raw, masks, stats, cfg.augment, generator, size, cfg.hard_negative_prob)

    def after(generator: torch.Generator) -> None:
        x, y = augment(raw, masks, stats, cfg.augment, generator)
        windows = choose_windows(y[:, 0], x[:, channels // 2], size, generator, cfg.hard_negative_prob)
        torch.stack([x[i, :, t : t + size, s : s + size] for i, (t, s) in enumerate(windows)])

    best = {"whole slice, then crop": float("inf"), "crop inside the warp": float("inf")}
    for _ in range(args.rounds):
        for name, way in zip(best, (after, inside)):
            generator = torch.Generator().manual_seed(0)
            way(generator)  # warm-up
            began = time.perf_counter()
            for _ in range(args.batches):
                way(generator)
            best[name] = min(best[name], 1000 * (time.perf_counter() - began) / args.batches)
    print(
        f"{args.config}: batch {cfg.batch_size} x {channels} x 256 x 256 -> {size} px patches, "
        f"{torch.get_num_threads()} threads, best of {args.rounds} rounds x {args.batches} batches"
    )
    for name, ms in best.items():
        print(f"  {name:24s} {ms:6.1f} ms a batch")
    print(f"ratio: {best['whole slice, then crop'] / best['crop inside the warp']:.2f}x faster inside the warp")


if __name__ == "__main__":
    main()
