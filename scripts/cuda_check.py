#!/usr/bin/env python
"""Check lggseg's CUDA training path on a real GPU: bf16 training steps, then DDP via torchrun.

    python scripts/cuda_check.py [--width 32] [--batch 32] [--steps 40] [--data DIR --fold K]

1. ``train()`` in this process on ``cuda`` with bf16 autocast (no process group);
2. the same run under ``torchrun --standalone --nproc_per_node=1`` (NCCL process group, the model
   wrapped in DistributedDataParallel), started as a subprocess.

Each part prints training throughput (images/s over the steps after the first few; a step
includes the CPU-side sampling and augmentation) and the peak GPU memory, then a summary line
``RESULT ...``. Data: the bundled 2-patient sample (fold 1: 1 training, 1 validation patient),
or ``--data``. Exits with status 2 at once, with one clear line, when CUDA is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--width", type=int, default=32, help="U-Net base width (32 = the reference model, 7.76 M parameters)"
    )
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--steps", type=int, default=40, help="training steps per part")
    parser.add_argument("--data", default=None, help="kaggle_3m-style folder (default: the bundled sample)")
    parser.add_argument("--fold", type=int, default=None, help="fold to train (default 1 for the sample, 0 otherwise)")
    parser.add_argument("--part", choices=["all", "single", "ddp"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help=argparse.SUPPRESS
    )  # exercise this script's logic on a CPU
    return parser.parse_args(argv)


def require_cuda() -> None:
    """Fail fast, in one line, when this machine or this torch build has no usable CUDA."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (CPU-only build)"
        print(
            f"error: CUDA is not available (torch {torch.__version__}, CUDA build: {built}); run this on a GPU machine",
            file=sys.stderr,
        )
        sys.exit(2)


def measure(args: argparse.Namespace, out: Path, label: str) -> dict:
    """Train ``args.steps`` steps with lggseg's train(); return throughput and peak memory."""
    import torch

    cuda = not args.cpu_dry_run

    from lggseg.data.bundled import sample_root
    from lggseg.train import distributed
    from lggseg.train.config import config_from_dict
    from lggseg.train.loop import train

    data = args.data or str(sample_root())
    fold = args.fold if args.fold is not None else (1 if args.data is None else 0)
    cfg = config_from_dict(
        {
            "data": data,
            "out": str(out),
            "fold": fold,
            "n_validation": 1 if args.data is None else 8,
            "epochs": 1,
            "samples_per_epoch": args.steps * args.batch,
            "batch_size": args.batch,
            "device": "cuda" if cuda else "cpu",
            "bf16": "auto",
            "calibrate": False,
            "model": {"base_width": args.width, "depth": 4},
        }
    )
    stamps: list[float] = []
    losses: list[float] = []

    def on_step(info) -> None:  # after backward, before the optimizer step
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        losses.append(float(info.loss))

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    train(cfg, log=lambda message: print(f"[{label}] {message}", flush=True), step_callback=on_step)
    total = time.perf_counter() - began
    dist = distributed.dist_from_env()
    steady = stamps[WARMUP_STEPS:]
    per_rank_batch = args.batch // dist.world_size
    images_per_s = (
        (len(steady) - 1) * per_rank_batch * dist.world_size / (steady[-1] - steady[0])
        if len(steady) > 1
        else float("nan")
    )
    device = torch.cuda.current_device() if cuda else None
    result = {
        "part": label,
        "gpu": torch.cuda.get_device_name(device) if cuda else "none (CPU dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported() if cuda else None,
        "world_size": dist.world_size,
        "width": args.width,
        "global_batch": args.batch,
        "steps": len(stamps),
        "train_images_per_s": float(f"{images_per_s:.4g}"),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if cuda else None,
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "seconds_total": round(total, 1),
    }
    if not all(map(lambda v: v == v and abs(v) < 1e6, losses)):
        raise SystemExit(f"error: non-finite loss in the {label} run: {losses}")
    if dist.is_main:
        print("RESULT " + json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_dry_run:
        require_cuda()
    if args.part == "ddp":  # we are the torchrun worker
        measure(args, Path(args.out), "ddp nproc_per_node=1")
        return 0
    with tempfile.TemporaryDirectory(prefix="lggseg_cuda_check_") as tmp:
        if args.part in ("all", "single"):
            measure(args, Path(tmp) / "single", "single process")
        if args.part in ("all", "ddp"):
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=1",
                __file__,
                "--part",
                "ddp",
                "--out",
                str(Path(tmp) / "ddp"),
            ]
            command += ["--width", str(args.width), "--batch", str(args.batch), "--steps", str(args.steps)]
            command += ["--cpu-dry-run"] if args.cpu_dry_run else []
            if args.data:
                command += ["--data", args.data]
            if args.fold is not None:
                command += ["--fold", str(args.fold)]
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
            code = subprocess.call(command, env=env)
            if code:
                print(f"error: the torchrun DDP part failed with status {code}", file=sys.stderr)
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
