"""One epoch of training, the learning-rate schedule, and validation (per-patient 3D Dice)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from lggseg.data.dataset import Volume
from lggseg.evaluation import metrics
from lggseg.infer import runtime
from lggseg.infer.preprocess import volume_batches
from lggseg.model.unet import UNet
from lggseg.train import distributed
from lggseg.train.augment import augment
from lggseg.train.config import TrainConfig
from lggseg.train.distributed import Dist
from lggseg.train.ema import WeightAverage
from lggseg.train.losses import dice_bce_loss
from lggseg.train.slices import SliceBank, draw_epoch
from lggseg.train.teacher import mix_targets


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepInfo:
    """What a ``step_callback`` sees on each rank after the backward pass, before the optimizer step.

    indices: ``(b,)`` slice-bank indices of this rank's samples; x: ``(b, C, 256, 256)`` network
    input; y: ``(b, 1, 256, 256)`` the loss's target (the annotation, mixed with the teachers'
    probability when the recipe distils); loss: this rank's scalar loss; model: the U-Net (not the
    DDP wrapper), whose ``.grad`` already holds the gradient averaged over all ranks.
    """

    epoch: int
    step: int
    rank: int
    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor
    model: torch.nn.Module


@dataclass
class EpochContext:
    """What one epoch of training needs besides the epoch number (fixed for the whole run)."""

    cfg: TrainConfig
    model: torch.nn.Module  # what the training step calls: the U-Net, or its DDP and/or torch.compile wrapper
    unet: UNet
    optimizer: torch.optim.Optimizer
    bank: SliceBank
    dist: Dist
    device: torch.device
    bf16: bool
    step_callback: Callable[[StepInfo], None] | None = None
    ema: WeightAverage | None = None  # updated after every optimizer step when the recipe averages weights

    @property
    def local_batch(self) -> int:
        return distributed.local_batch_size(self.cfg.batch_size, self.dist)

    @property
    def steps_per_epoch(self) -> int:
        return self.cfg.steps_per_epoch


def train_one_epoch(ctx: EpochContext, epoch: int) -> dict[str, float]:
    """Train ``epoch``; returns lr, train_loss, train_dice and train_iou (pooled over all ranks).

    Every epoch draws its samples and augmentation from a generator seeded by (seed, epoch), so a
    resumed run continues exactly where it stopped. Distributed: every rank draws the same indices,
    then takes its disjoint share and augments it with a generator seeded by (seed, epoch, rank).
    """
    cfg, dist, steps = ctx.cfg, ctx.dist, ctx.steps_per_epoch
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 7_919 + epoch + 104_729 * dist.rank)
    order = draw_epoch(
        ctx.bank,
        steps * cfg.batch_size,
        cfg.fg_fraction,
        generator,
        cfg.vertex_fraction,
        cfg.tumor_balance,
        cfg.end_fraction,
    )
    mine = distributed.shard(order, dist)  # this rank's share; all of ``order`` alone
    augment_generator = (
        generator if dist.world_size == 1 else distributed.rank_generator(cfg.seed * 100_003 + epoch, dist)
    )
    ctx.model.train()
    sums = {"loss": 0.0, "inter": 0.0, "total": 0.0, "union": 0.0}
    lr = cfg.lr
    with _progress_bar(show=dist.is_main) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps, info="")
        for step in range(steps):
            lr = learning_rate(cfg, epoch * steps + step, steps)
            for group in ctx.optimizer.param_groups:
                group["lr"] = lr
            idx = mine[step * ctx.local_batch : (step + 1) * ctx.local_batch]
            raw, stats = ctx.bank.inputs(idx, cfg.model.context_slices)
            midlines = ctx.bank.midlines[idx] if cfg.model.mirror else None
            x, targets = augment(
                raw,
                ctx.bank.targets(idx),
                stats,
                cfg.augment,
                augment_generator,
                cfg.crop_size,
                cfg.hard_negative_prob,
                midlines,
            )
            x = x.to(ctx.device).contiguous(memory_format=torch.channels_last)
            y = targets[:, :1].to(ctx.device)  # the annotation, for the running Dice
            goal = mix_targets(targets, cfg.distill_weight).to(ctx.device) if targets.shape[1] > 1 else y
            with runtime.autocast(ctx.device, ctx.bf16):
                logits = ctx.model(x)
            loss = dice_bce_loss(logits, goal, cfg.bce_weight, cfg.dice_per_image)
            ctx.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients over the ranks here
            if ctx.step_callback is not None:
                ctx.step_callback(StepInfo(epoch, step, dist.rank, idx, x, goal, loss.detach(), ctx.unet))
            ctx.optimizer.step()
            if ctx.ema is not None:
                ctx.ema.update(ctx.unet)
            with torch.no_grad():
                hard = (logits.float() > 0).float()
                inter, total = float((hard * y).sum()), float(hard.sum() + y.sum())
            sums["loss"] += float(loss.detach())
            sums["inter"] += inter
            sums["total"] += total
            sums["union"] += total - inter
            dice_so_far = 2 * sums["inter"] / max(sums["total"], 1.0)
            bar.update(task, advance=1, info=f"loss {sums['loss'] / (step + 1):.4f}  dice {dice_so_far:.3f}")
    sums = distributed.all_reduce_sums(sums, dist)  # totals over all ranks (unchanged alone)
    return {
        "lr": lr,
        "train_loss": sums["loss"] / (steps * dist.world_size),
        "train_dice": 2 * sums["inter"] / max(sums["total"], 1.0),
        "train_iou": sums["inter"] / max(sums["union"], 1.0),
    }


def _progress_bar(show: bool) -> Any:
    """The epoch's progress bar; ranks other than 0 get a disabled one (Rich's ``disable``)."""
    from lggseg.io.progress import make_progress

    bar = make_progress(transient=True)
    bar.disable = not show
    return bar


@torch.inference_mode()
def validate(
    model: UNet, volumes: list[Volume], device: torch.device, bf16: bool, bce_weight: float, batch_size: int = 16
) -> dict[str, float]:
    """Per-patient 3D Dice/IoU at threshold 0.5 (no post-processing), and the mean loss (the
    batch-pooled Dice + BCE, whatever the training loss, so runs compare)."""
    model.eval()
    dices, ious, losses = [], [], []
    for volume in volumes:
        truth = volume.require_masks()
        pred = np.empty(truth.shape, bool)
        batches = volume_batches(volume.images, model.config.context_slices, batch_size, mirror=model.config.mirror)
        for start, x in batches:
            target = torch.from_numpy(truth[start : start + batch_size])[:, None].float()
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with runtime.autocast(device, bf16):
                logits = model(x)
            losses.append(float(dice_bce_loss(logits, target.to(device), bce_weight)))
            pred[start : start + batch_size] = (logits.float() > 0).cpu().numpy()[:, 0]
        dices.append(metrics.dice(pred, truth))
        ious.append(metrics.iou(pred, truth))
    return {"val_loss": float(np.mean(losses)), "val_dice": float(np.mean(dices)), "val_iou": float(np.mean(ious))}
