"""The shipped recipe's training step, eager vs torch.compile, side by side in one run.

One step of ``configs/lgg_unet12_v3.yaml`` as ``lggseg train`` runs it: a batch of 16 2.5D slices
(9 x 256 x 256) augmented and cut to 160-pixel patches, the U-Net f=12 forward under bf16 autocast
(where the CPU has it), Dice + BCE, backward, AdamW. Each way runs in its own process (a compiled
graph lives in its process; malloc tuning is process-wide), the two alternate for ``--rounds``
rounds and the best round counts. The compiled way also reports its first call, which includes
the compile (TorchInductor caches generated code on disk, so later rounds compile faster).

    python benchmarks/train_compile.py [--steps 15] [--rounds 2] [--config configs/lgg_unet12_v3.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WAYS = ("eager", "compiled")


def worker(way: str, config: str, steps: int, warmup: int) -> dict:
    from lggseg.infer import runtime

    runtime.tune_malloc()
    import torch

    from lggseg.model.unet import UNet
    from lggseg.train.augment import augment
    from lggseg.train.config import load_config
    from lggseg.train.losses import dice_bce_loss

    cfg = load_config(config)
    device = torch.device("cpu")
    torch.manual_seed(0)
    unet = runtime.prepare_model(UNet(cfg.model), device)
    model = runtime.compile_for_training(unet, fall_back=False) if way == "compiled" else unet
    bf16 = runtime.use_bf16(device, cfg.bf16)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    channels = cfg.model.in_channels
    raw = torch.rand(cfg.batch_size, channels, 256, 256) * 255
    masks = torch.zeros(cfg.batch_size, 1, 256, 256)
    masks[::2, :, 100:140, 90:150] = 1  # half the batch with tumor, as fg_fraction 0.5 draws
    stats = torch.tensor([[0.0, 255.0, 100.0, 50.0]] * channels).T.expand(cfg.batch_size, 4, channels).contiguous()
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = augment(raw, masks, stats, cfg.augment, generator, cfg.crop_size, cfg.hard_negative_prob)
        x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, bf16):
            logits = model(x)
        loss = dice_bce_loss(logits, y[:, :1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    began = time.perf_counter()
    step()
    first = time.perf_counter() - began
    for _ in range(warmup):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    ms = 1000 * (time.perf_counter() - began) / steps
    return {"way": way, "ms_per_step": ms, "first_call_s": first, "bf16": bf16, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/lgg_unet12_v3.yaml", help="recipe whose step is timed")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two ways this many times; best counts")
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.config, args.steps, args.warmup)))
        return
    from lggseg.train.config import load_config

    cfg = load_config(args.config)
    best: dict[str, dict] = {}
    first_compile = 0.0
    for _ in range(args.rounds):
        for way in WAYS:
            command = [sys.executable, __file__, "--worker", way, "--config", args.config]
            command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            out = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if way == "compiled" and not first_compile:
                first_compile = result["first_call_s"]
            if way not in best or result["ms_per_step"] < best[way]["ms_per_step"]:
                best[way] = result
    print(
        f"{args.config}: batch {cfg.batch_size} x {cfg.model.in_channels} x 256 x 256 -> {cfg.crop_size} px, "
        f"{best['eager']['threads']} threads, bf16 {best['eager']['bf16']}, best of {args.rounds} round(s) x "
        f"{args.steps} steps"
    )
    for way, result in best.items():
        minutes = result["ms_per_step"] * cfg.steps_per_epoch * cfg.epochs / 60_000
        ms = result["ms_per_step"]
        print(f"  {way:9s} {ms:7.1f} ms a step  ({minutes:5.1f} min of steps for {cfg.epochs} epochs)")
    print(f"  first compiled call (the compile, cold cache): {first_compile:.0f} s")
    print(f"ratio: {best['eager']['ms_per_step'] / best['compiled']['ms_per_step']:.2f}x faster compiled")


if __name__ == "__main__":
    main()
