"""The cohort reference: shape features of the 100 manual masks of ``kaggle_3m``, shipped as a table.

The web page's "Shape" panel places one case's BEVR, margin fluctuation (MF) and angular SD (ASD)
among the patients of the LGG data set (Buda et al. 2019; features in :mod:`lggseg.shape.features`).
The table ``cohort_features.csv`` beside this module holds, per patient, ``patient, volume_voxels,
bevr, margin_fluctuation, angular_sd`` computed from the GROUND-TRUTH masks in voxel units (the
Kaggle TIFFs carry no voxel size); derived numbers only, no images. Regenerate it with::

    python scripts/make_cohort_features.py ../shared/data/lgg/kaggle_3m

Conventions
-----------
* **Percentile** of a value in the cohort: the share of cohort patients with a smaller value, plus
  half the share with an equal one, times 100 (``scipy.stats.percentileofscore(kind="mean")``);
  0 below every patient, 100 above every patient, 50 at the median of distinct values. Patients
  whose feature is NaN (an empty mask, a region too small for MF/ASD) are left out of that feature.
* **Quartiles** (the box plot): numpy's default linear interpolation.
* **A case** (:func:`case_shape`) is measured exactly as the cohort is: :func:`shape_features` on
  its ``(Z, H, W)`` mask in voxel units, whatever the case's voxel size, so the numbers are
  comparable. A case of one slice gets MF and ASD (2D features, of that slice) but no BEVR and no
  volume percentile: BEVR needs a 3D volume, and the cohort's MF and ASD come from each patient's
  largest slice, which one uploaded slice need not be. An empty mask has no shape: None.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from lggseg.shape.features import shape_features

COHORT_FILE = "cohort_features.csv"
COHORT_COLUMNS: tuple[str, ...] = ("patient", "volume_voxels", "bevr", "margin_fluctuation", "angular_sd")
"""Columns of ``cohort_features.csv``."""
COHORT_FEATURES: tuple[str, ...] = COHORT_COLUMNS[1:]
"""The features with a cohort distribution: the volume and the three paper features."""


@dataclass(frozen=True)
class Summary:
    """Five-number summary of one feature over the cohort (NaN values left out)."""

    n: int
    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float


@dataclass(frozen=True)
class Cohort:
    """The reference table: ``values[feature]`` is the sorted ``(n,)`` finite values of that feature."""

    patients: tuple[str, ...]
    values: Mapping[str, np.ndarray]

    def percentile(self, feature: str, value: float | None) -> float | None:
        """Percentile of ``value`` among the cohort's ``feature`` (see the module docstring); None for
        None, NaN, or a feature without finite cohort values."""
        return percentile_of(self.values[feature], value)

    def summary(self, feature: str) -> Summary:
        v = self.values[feature]
        if len(v) == 0:
            nan = math.nan
            return Summary(0, nan, nan, nan, nan, nan)
        q1, median, q3 = (float(q) for q in np.percentile(v, [25, 50, 75]))
        return Summary(len(v), float(v[0]), q1, median, q3, float(v[-1]))


def percentile_of(values: Sequence[float] | np.ndarray, value: float | None) -> float | None:
    """100 x (share of ``values`` below ``value`` + half the share equal to it); NaN values ignored.

    None when ``value`` is None or NaN, or when no value is finite.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if value is None or not math.isfinite(value) or len(v) == 0:
        return None
    below = int(np.count_nonzero(v < value))
    equal = int(np.count_nonzero(v == value))
    return 100.0 * (below + 0.5 * equal) / len(v)


def parse_cohort(text: str) -> Cohort:
    """A ``cohort_features.csv`` text -> :class:`Cohort` (empty cells are NaN and left out)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = set(COHORT_COLUMNS) - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"cohort table lacks the columns {sorted(missing)}")
    values = {}
    for feature in COHORT_FEATURES:
        column = np.array([float(r[feature]) if r[feature].strip() else math.nan for r in rows], dtype=float)
        values[feature] = np.sort(column[np.isfinite(column)])
    return Cohort(tuple(r["patient"] for r in rows), values)


@functools.lru_cache(maxsize=1)
def load_cohort() -> Cohort:
    """The shipped reference table (read once)."""
    return parse_cohort(resources.files("lggseg.shape").joinpath(COHORT_FILE).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class CaseShape:
    """One case's features and their cohort percentiles (None: not defined for this case)."""

    dimensions: Literal[2, 3]  # 3: a volume; 2: one slice (no BEVR)
    largest_slice: int  # 0-based index of the slice MF and ASD are measured on
    values: Mapping[str, float | None]
    percentiles: Mapping[str, float | None]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def case_shape(mask: np.ndarray, cohort: Cohort | None = None) -> CaseShape | None:
    """Features of a ``(Z, H, W)`` bool mask (voxel units, as the cohort) and their percentiles.

    None for an empty mask. A one-slice mask (``Z == 1``) has no BEVR and no volume percentile.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be (Z, H, W), got shape {mask.shape}")
    if not mask.any():
        return None
    cohort = cohort or load_cohort()
    features = shape_features("case", mask)
    volume = mask.shape[0] > 1
    values: dict[str, float | None] = {
        "volume_voxels": float(features.volume_voxels),
        "bevr": _finite(features.bevr) if volume else None,
        "margin_fluctuation": _finite(features.margin_fluctuation),
        "angular_sd": _finite(features.angular_sd),
    }
    percentiles = {f: cohort.percentile(f, values[f]) for f in COHORT_FEATURES}
    if not volume:
        percentiles["volume_voxels"] = None
    areas = mask.reshape(len(mask), -1).sum(axis=1)
    return CaseShape(3 if volume else 2, int(np.argmax(areas)), values, percentiles)


def compute_cohort_rows(
    data_dir: str | Path, log: Callable[[str], None] = print, progress: bool = False
) -> list[dict[str, object]]:
    """One row (:data:`COHORT_COLUMNS`) per patient of a ``kaggle_3m`` folder, from its manual masks."""
    from lggseg.data.dataset import index_dataset
    from lggseg.errors import LggsegError
    from lggseg.shape.report import compute_features
    from lggseg.shape.sources import truth_source

    index = index_dataset(data_dir)
    truth = truth_source(index)
    if truth is None:
        raise LggsegError(f"{data_dir}: has no ground-truth masks (<patient>_<n>_mask.tif)")
    rows = compute_features([p.name for p in index.patients], truth, None, log, progress, "truth masks")
    return [{c: r[c] for c in COHORT_COLUMNS} for r in rows]


def write_cohort_table(rows: Sequence[Mapping[str, object]], target: str | Path) -> None:
    """Write the rows as ``cohort_features.csv`` (floats with 6 significant digits, NaN empty), atomically."""
    from lggseg.shape.render import write_csv

    write_csv(Path(target), COHORT_COLUMNS, rows)
