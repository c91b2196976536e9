"""Training speed, side by side in one run: our training step vs the way peers train.

Each variant runs in its own subprocess (malloc tuning is process-wide), on the same
batch shape (16 x 3 x 256 x 256), and reports training images per second:

* ours            - shipped architecture (U-Net f=16), our step: malloc tuning, channels_last,
                    bf16 autocast where the CPU has it, *including* our batched augmentation;
* peers_same      - the same f=16 model trained the way peers do it: eager fp32, NCHW,
                    default allocator, no augmentation cost counted;
* reference_f32   - the reference model of docs/protocol.md (classic U-Net f=32, 7.76 M parameters), peers' way;
* ours_f32        - the reference architecture with our settings (for scale).

    python benchmarks/train_speed.py [--steps 12] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "ours": {"width": 16, "tuned": True},
    "peers_same": {"width": 16, "tuned": False},
    "reference_f32": {"width": 32, "tuned": False},
    "ours_f32": {"width": 32, "tuned": True},
}


def worker(name: str, steps: int, warmup: int) -> dict:
    spec = VARIANTS[name]
    tuned = spec["tuned"]
    if tuned:
        from lggseg.infer import runtime

        runtime.tune_malloc()
    import torch

    from lggseg.infer import runtime
    from lggseg.model.unet import UNet, UNetConfig
    from lggseg.train.augment import AugmentConfig, augment
    from lggseg.train.losses import dice_bce_loss

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = UNet(UNetConfig(base_width=spec["width"], depth=4))
    bf16 = tuned and runtime.use_bf16(device, "auto")
    if tuned:
        model = runtime.prepare_model(model, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    raw = torch.rand(16, 3, 256, 256) * 255
    masks = (torch.rand(16, 1, 256, 256) > 0.9).float()
    stats = torch.tensor([[0.0, 255.0, 100.0, 50.0]] * 3).T.expand(16, 4, 3).contiguous()
    generator = torch.Generator().manual_seed(0)
    x_plain = (raw - 100) / 50

    def step() -> None:
        if tuned:
            x, y = augment(raw, masks, stats, AugmentConfig(), generator)
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x, y = x_plain, masks
        with runtime.autocast(device, bf16):
            logits = model(x)
        loss = dice_bce_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - began
    return {"variant": name, "images_per_s": 16 * steps / seconds, "bf16": bf16, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the variants this many times; the best round counts"
    )
    parser.add_argument("--quick", action="store_true", help="2 steps, 1 round (smoke test)")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name in VARIANTS:
            env = {k: v for k, v in os.environ.items() if not k.startswith("GLIBC_TUNABLES")}
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup", str(args.warmup)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if name not in best or result["images_per_s"] > best[name]["images_per_s"]:
                best[name] = result
    print(
        f"training images/s, batch 16 x 3 x 256 x 256, {best['ours']['threads']} threads, best of {args.rounds} "
        f"round(s) x {args.steps} steps"
    )
    for name, result in best.items():
        print(f"  {name:14s} {result['images_per_s']:7.2f} img/s   bf16={result['bf16']}")
    print(
        "ratio ours / peers_same (same f=16 model)      "
        f"{best['ours']['images_per_s'] / best['peers_same']['images_per_s']:.2f}x"
    )
    print(
        "ratio ours / reference_f32 (docs/protocol.md reference)  "
        f"{best['ours']['images_per_s'] / best['reference_f32']['images_per_s']:.2f}x"
    )
    print(
        "ratio ours_f32 / reference_f32 (same f=32)     "
        f"{best['ours_f32']['images_per_s'] / best['reference_f32']['images_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
