"""Cohort-level summaries of per-patient results: bootstrap intervals and group rows.

The out-of-fold report of ``lggseg cv`` is one row per patient; these functions turn it into
the numbers a reader checks next to the headline: a 95% bootstrap interval of the mean Dice
(patients resampled with replacement) and one row per fold and per institution.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.io import atomic


def bootstrap_mean_interval(
    values: Sequence[float], level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values, e.g. patients)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def institution(patient: str) -> str:
    """The TCGA tissue-source site of a patient ID: ``TCGA_CS_4941_19960909`` -> ``CS``."""
    parts = patient.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "TCGA" else "?"


def group_rows(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any], name: str) -> list[dict[str, Any]]:
    """One summary row per group of patients: ``{name: group, n_patients, mean/median/min Dice, ...}``."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for group in sorted(groups, key=str):
        members = groups[group]
        dices = [r["dice"] for r in members]
        empty = sum(r.get("n_empty_slices", 0) for r in members)
        false_pos = sum(r.get("n_false_positive_slices", 0) for r in members)
        out.append(
            {
                name: group,
                "n_patients": len(members),
                "mean_dice": statistics.fmean(dices),
                "median_dice": statistics.median(dices),
                "min_dice": min(dices),
                "false_positive_rate_empty_slices": false_pos / empty if empty else None,
            }
        )
    return out


def write_group_csv(groups: Sequence[dict[str, Any]], path: Path) -> None:
    """One summary row per group (fold or institution), as CSV."""
    if not groups:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(groups[0]), extrasaction="ignore")
    writer.writeheader()
    for row in groups:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic.write_text(path, buffer.getvalue())


def dice_by_group_figure(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Per-patient Dice as dots, grouped by fold (left) and by institution (right), with group medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    for ax, key, title in (
        (axes[0], lambda r: f"fold {r['fold']}", "by fold"),
        (axes[1], lambda r: institution(r["patient"]), "by institution"),
    ):
        groups: dict[str, list[float]] = {}
        for row in rows:
            groups.setdefault(key(row), []).append(row["dice"])
        names = sorted(groups)
        rng = np.random.default_rng(0)
        for i, name in enumerate(names):
            values = np.asarray(groups[name])
            ax.scatter(i + rng.uniform(-0.15, 0.15, values.size), values, s=14, alpha=0.7, color="#0072B2")
            ax.hlines(np.median(values), i - 0.3, i + 0.3, color="#D55E00", lw=2)
        ax.set_xticks(range(len(names)), [f"{n}\n(n={len(groups[n])})" for n in names], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("per-patient 3D Dice")
        ax.set_title(f"Out-of-fold Dice {title} (bar = median)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
