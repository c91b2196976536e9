"""Cohort-level summaries of per-patient results: bootstrap intervals and group rows.

The out-of-fold report of ``lggseg cv`` is one row per patient; these functions turn it into
the numbers a reader checks next to the headline: a 95% bootstrap interval of the mean Dice
(patients resampled with replacement) and one row per fold and per institution.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.evaluation.report import write_csv


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


@dataclass(frozen=True)
class PairedSummary:
    """Per-patient differences (new minus old) summarised: mean, its bootstrap interval, how many improved."""

    mean: float
    low: float
    high: float
    n_better: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n_better": self.n_better}

    def describe(self) -> str:
        return f"{self.mean:+.3f} ({self.low:+.3f} to {self.high:+.3f}), {self.n_better}/{self.n} better"


def paired_summary(differences: Sequence[float]) -> PairedSummary:
    """Summarise per-patient differences, in the order given (the bootstrap resamples that order)."""
    low, high = bootstrap_mean_interval(differences)
    return PairedSummary(statistics.fmean(differences), low, high, sum(d > 0 for d in differences), len(differences))


def headline(summary: Mapping[str, Any]) -> str:
    """One line of a cohort summary: ``"81 patients, mean 0.845 median 0.886 min 0.385, FP 2.8%"``."""
    return (
        f"{summary['n_patients']} patients, mean {summary['mean_dice']:.3f} median {summary['median_dice']:.3f} "
        f"min {summary['min_dice']:.3f}, FP {summary['false_positive_rate_empty_slices']:.1%}"
    )


def institution(patient: str) -> str:
    """The TCGA tissue-source site of a patient ID: ``TCGA_CS_4941_19960909`` -> ``CS``."""
    parts = patient.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "TCGA" else "?"


SIZE_BINS: tuple[tuple[int, str], ...] = (
    (0, "under 5k"),
    (5_000, "5k-10k"),
    (10_000, "10k-20k"),
    (20_000, "20k-40k"),
    (40_000, "40k and up"),
)
"""Tumor-size groups: (lowest annotated voxel count, label). Small tumors are where Dice is hardest."""


def size_group(volume_true: int) -> str:
    """The :data:`SIZE_BINS` label of a patient's annotated tumor volume in voxels."""
    return [label for low, label in SIZE_BINS if volume_true >= low][-1]


def size_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`group_rows` by annotated tumor size (``tumor_voxels``), smallest group first."""
    order = [label for _, label in SIZE_BINS]
    groups = group_rows(rows, lambda r: size_group(int(r["volume_true"])), "tumor_voxels")
    return sorted(groups, key=lambda g: order.index(g["tumor_voxels"]))


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
    """One summary row per group (fold, institution or tumor size), as CSV."""
    if groups:
        write_csv(groups, path, list(groups[0]))
