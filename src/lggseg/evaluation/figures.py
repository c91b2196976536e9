"""matplotlib figures: training curves, per-patient Dice bars, overlay grids, the patient summary.

matplotlib runs with the non-interactive Agg backend; every file is written atomically. The
overlays themselves (pure numpy) are drawn by :mod:`lggseg.evaluation.render`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lggseg.evaluation.cohort import SIZE_BINS, institution, size_group
from lggseg.evaluation.render import overlay
from lggseg.io.atomic import atomic_path

OUTLINE_KEY = "outlines: sky blue ground truth, vermillion prediction"
MONTAGE_LIMIT = 24
"""Most slices the patient summary shows; beyond it the title says how many of how many."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(axis: Any) -> None:
    """Integer tick labels only (slice numbers, epochs)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)


def training_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Loss, Dice and IoU per epoch, train vs validation (epochs without validation: train only)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "dice", "iou"), ("loss (Dice + BCE)", "Dice", "IoU")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", ms=3, label="train (pooled over batches)")
        validated = [(r["epoch"], r[f"val_{key}"]) for r in history if r.get(f"val_{key}") is not None]
        if validated:  # a refit (no validation patients) has none
            ax.plot(
                *zip(*validated),
                "o-",
                ms=3,
                label="validation (mean per patient)" if key != "loss" else "validation",
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        _integer_ticks(ax.xaxis)
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
    """A grid of overlays; each case is (title, image ``(H, W, 3)``, truth ``(H, W)``, prediction ``(H, W)``).

    Titles are wrapped onto two lines at their first ``": "`` and laid out by matplotlib's
    constrained layout, so no title runs into the row above or below.
    """
    plt = _pyplot()
    cols = min(3, len(cases))
    rows = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.4 * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, truth, pred) in zip(axes.ravel(), cases):
        ax.imshow(overlay(image, pred, truth))
        ax.set_title(title.replace(": ", "\n", 1), fontsize=8)
    fig.suptitle(OUTLINE_KEY, fontsize=9)
    _save(fig, path)


def montage_slices(areas: np.ndarray, true_areas: np.ndarray | None, limit: int = MONTAGE_LIMIT) -> np.ndarray:
    """0-based indices of the slices a summary shows: every slice with tumor (predicted or true), or
    ``limit`` of them evenly spread when there are more; all slices when none has tumor (up to ``limit``).

    areas, true_areas: ``(Z,)`` pixel counts.
    """
    interesting = np.flatnonzero(areas + (true_areas if true_areas is not None else 0))
    if len(interesting) == 0:
        interesting = np.arange(len(areas))
    if len(interesting) <= limit:
        return interesting
    return interesting[np.linspace(0, len(interesting) - 1, limit).round().astype(int)]


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
    tumor_slices = int(np.count_nonzero(areas + (true_areas if true_areas is not None else 0)))
    picks = montage_slices(areas, true_areas)
    cols = 6 if len(picks) > 8 else 4
    rows = max(1, -(-len(picks) // cols))
    panel = 12 / cols + 0.3  # inches per montage row: a square image and its title
    fig = plt.figure(figsize=(12, rows * panel + 3.6), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[panel] * rows + [3.0])
    for i, z in enumerate(picks):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(overlay(images[z], pred[z], truth[z] if truth is not None else None))
        ax.set_title(f"slice {z + 1}: {int(areas[z])} px", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    ax.bar(np.arange(1, len(pred) + 1), areas, color="#D55E00", alpha=0.85, label="predicted")
    if true_areas is not None:
        ax.step(np.arange(1, len(pred) + 1), true_areas, where="mid", color="#0072B2", lw=1.6, label="ground truth")
    ax.set_xlabel("slice")
    _integer_ticks(ax.xaxis)
    ax.set_xlim(0.4, len(pred) + 0.6)
    ax.set_ylabel("tumor area (pixels)")
    ax.legend(fontsize=8)
    headline = f"{name}   predicted volume {int(pred.sum())} voxels in {int((areas > 0).sum())} slices"
    if truth is not None:
        headline += f"   true {int(truth.sum())} voxels"
    if dice is not None:
        headline += f"   3D Dice {dice:.3f}"
    if tumor_slices:
        shown = "all" if len(picks) == tumor_slices else f"{len(picks)} of"
        montage = f"{shown} {tumor_slices} slices with tumor shown"
    else:
        montage = f"no tumor; {len(picks)} of {len(pred)} slices shown"
    fig.suptitle(f"{headline}\n{montage}; {OUTLINE_KEY}", fontsize=10)
    _save(fig, path)


def dice_by_group(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Per-patient Dice as dots, grouped by fold, by institution and by tumor size, with group medians."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), gridspec_kw={"width_ratios": [1, 1.3, 1.2]})
    sizes = [label for _, label in SIZE_BINS]
    panels: list[tuple[Any, Callable[[dict[str, Any]], str], Callable[[str], Any], str]] = [
        (axes[0], lambda r: f"fold {r['fold']}", str, "by fold"),
        (axes[1], lambda r: institution(r["patient"]), str, "by institution"),
        (axes[2], lambda r: size_group(int(r["volume_true"])), sizes.index, "by tumor voxels"),
    ]
    for ax, key, order, title in panels:
        groups: dict[str, list[float]] = {}
        for row in rows:
            groups.setdefault(key(row), []).append(row["dice"])
        names = sorted(groups, key=order)
        rng = np.random.default_rng(0)
        for i, name in enumerate(names):
            values = np.asarray(groups[name])
            ax.scatter(i + rng.uniform(-0.15, 0.15, values.size), values, s=14, alpha=0.7, color="#0072B2")
            ax.hlines(np.median(values), i - 0.3, i + 0.3, color="#D55E00", lw=2)
        ax.set_xticks(range(len(names)), [f"{n}\n(n={len(groups[n])})" for n in names], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("per-patient 3D Dice")
        ax.set_title(f"Out-of-fold Dice {title} (bar = median)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
