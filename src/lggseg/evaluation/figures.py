"""matplotlib figures: training curves, per-patient Dice bars, overlay grids, the patient summary.

matplotlib runs with the non-interactive Agg backend; every file is written atomically. The
overlays themselves (pure numpy) are drawn by :mod:`lggseg.evaluation.render`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lggseg.evaluation.render import overlay
from lggseg.io.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)


def training_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Loss, Dice and IoU per epoch, train vs validation."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "dice", "iou"), ("loss (Dice + BCE)", "Dice", "IoU")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", ms=3, label="train (pooled over batches)")
        ax.plot(
            epochs,
            [r[f"val_{key}"] for r in history],
            "o-",
            ms=3,
            label="validation (mean per patient)" if key != "loss" else "validation",
        )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def dice_bars(per_patient: list[dict[str, Any]], path: str | Path) -> None:
    """Per-patient Dice, sorted, with the mean and median marked."""
    plt = _pyplot()
    rows = sorted(per_patient, key=lambda r: r["dice"])
    values = [r["dice"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), values, color="#4C72B0")
    ax.axhline(float(np.mean(values)), color="#C44E52", ls="--", label=f"mean {np.mean(values):.3f}")
    ax.axhline(float(np.median(values)), color="#55A868", ls=":", label=f"median {np.median(values):.3f}")
    ax.set_xticks(range(len(rows)), [r["patient"].replace("TCGA_", "")[:12] for r in rows], rotation=75, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("3D Dice per patient")
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def overlay_grid(cases: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path) -> None:
    """A grid of overlays; each case is (title, image ``(H, W, 3)``, truth, prediction)."""
    plt = _pyplot()
    cols = min(3, len(cases))
    rows = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, truth, pred) in zip(axes.ravel(), cases):
        ax.imshow(overlay(image, pred, truth))
        ax.set_title(title, fontsize=8)
    fig.suptitle("green: ground truth   red: prediction", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def patient_summary(
    name: str,
    images: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None,
    path: str | Path,
    dice: float | None = None,
) -> None:
    """One page: montage of tumor slices with outlines, tumor area per slice, and the volume."""
    plt = _pyplot()
    areas = pred.reshape(len(pred), -1).sum(1)
    true_areas = truth.reshape(len(truth), -1).sum(1) if truth is not None else None
    interesting = np.flatnonzero(areas + (true_areas if true_areas is not None else 0))
    if len(interesting) == 0:
        interesting = np.arange(len(pred))
    picks = interesting[np.linspace(0, len(interesting) - 1, min(8, len(interesting))).round().astype(int)]
    fig = plt.figure(figsize=(12, 8.5))
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 0.9])
    for i, z in enumerate(picks):
        ax = fig.add_subplot(grid[i // 4, i % 4])
        ax.imshow(overlay(images[z], pred[z], truth[z] if truth is not None else None))
        ax.set_title(f"slice {z + 1}: {int(areas[z])} px", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[2, :])
    ax.bar(np.arange(1, len(pred) + 1), areas, color="#C44E52", alpha=0.8, label="predicted")
    if true_areas is not None:
        ax.step(np.arange(1, len(pred) + 1), true_areas, where="mid", color="#2CA02C", label="ground truth")
    ax.set_xlabel("slice")
    ax.set_ylabel("tumor area (pixels)")
    ax.legend(fontsize=8)
    headline = f"{name}   predicted volume {int(pred.sum())} voxels in {int((areas > 0).sum())} slices"
    if truth is not None:
        headline += f"   true {int(truth.sum())} voxels"
    if dice is not None:
        headline += f"   3D Dice {dice:.3f}"
    fig.suptitle(headline + "\n(outlines: green ground truth, red prediction)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
