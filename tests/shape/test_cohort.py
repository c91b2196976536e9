"""The cohort reference of the web page's Shape panel: percentiles, the shipped table, one case's features."""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lggseg.io.images import read_mask
from lggseg.shape.cohort import (
    COHORT_COLUMNS,
    COHORT_FILE,
    case_shape,
    compute_cohort_rows,
    load_cohort,
    parse_cohort,
    percentile_of,
    write_cohort_table,
)
from lggseg.shape.features import shape_features

SMALL = "patient,volume_voxels,bevr,margin_fluctuation,angular_sd\n" + "\n".join(
    f"P{i},{v},{b},{m},{a}"
    for i, (v, b, m, a) in enumerate(
        [(10, 0.1, 0.01, ""), (20, 0.2, 0.02, 0.2), (30, 0.3, 0.03, 0.3), (40, 0.4, 0.04, 0.4), (50, 0.5, "", 0.5)]
    )
)


def shipped_rows() -> list[dict[str, str]]:
    text = resources.files("lggseg.shape").joinpath(COHORT_FILE).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_percentile_counts_below_and_half_the_ties() -> None:
    values = [1.0, 2.0, 2.0, 3.0, math.nan]  # NaN is left out: 4 values
    assert percentile_of(values, 0.5) == 0.0
    assert percentile_of(values, 1.0) == 12.5  # (0 below + 1/2 tie) / 4
    assert percentile_of(values, 2.0) == 50.0  # (1 + 2/2) / 4
    assert percentile_of(values, 2.5) == 75.0
    assert percentile_of(values, 3.0) == 87.5
    assert percentile_of(values, 9.0) == 100.0
    assert percentile_of(values, None) is None and percentile_of(values, math.nan) is None
    assert percentile_of([math.nan], 1.0) is None and percentile_of([], 1.0) is None
    rng = np.random.default_rng(3)
    draws = np.round(rng.normal(size=57), 1)  # with ties
    for x in (-3.0, -0.1, 0.0, 0.4, 2.5):
        assert percentile_of(draws, x) == pytest.approx(scipy_stats.percentileofscore(draws, x, kind="mean"))


def test_parse_cohort_leaves_out_empty_cells_and_summarises() -> None:
    cohort = parse_cohort(SMALL)
    assert cohort.patients == ("P0", "P1", "P2", "P3", "P4")
    assert list(cohort.values["angular_sd"]) == [0.2, 0.3, 0.4, 0.5]
    box = cohort.summary("angular_sd")
    assert (box.n, box.minimum, box.q1, box.median, box.q3, box.maximum) == pytest.approx(
        (4, 0.2, 0.275, 0.35, 0.425, 0.5)
    )
    box = cohort.summary("volume_voxels")
    assert (box.n, box.q1, box.median, box.q3) == (5, 20.0, 30.0, 40.0)
    assert cohort.percentile("margin_fluctuation", 0.025) == 50.0  # 2 of the 4 finite values below
    with pytest.raises(ValueError, match="bevr"):
        parse_cohort("patient,volume_voxels,margin_fluctuation,angular_sd\nP,1,0.1,0.1\n")


def test_shipped_table_has_the_100_patients_and_only_derived_numbers() -> None:
    rows = shipped_rows()
    assert len(rows) == 100 and len({r["patient"] for r in rows}) == 100
    assert tuple(rows[0]) == COHORT_COLUMNS
    for row in rows:
        assert row["patient"].startswith("TCGA_")
        assert int(row["volume_voxels"]) > 0
        assert 0 < float(row["bevr"]) <= 1
        assert 0 < float(row["margin_fluctuation"]) < 1 and 0 < float(row["angular_sd"]) < 1
    cohort = load_cohort()
    assert all(len(cohort.values[f]) == 100 for f in COHORT_COLUMNS[1:])
    size = resources.files("lggseg.shape").joinpath(COHORT_FILE).read_bytes()
    assert len(size) < 16_000


def test_shipped_table_matches_the_features_of_the_bundled_patients_truth(sample_dir: Path) -> None:
    """The two bundled patients are in the cohort; their rows are their manual masks' features."""
    rows = {r["patient"]: r for r in shipped_rows()}
    patients = sorted(p for p in sample_dir.iterdir() if p.is_dir())
    assert len(patients) == 2
    for folder in patients:
        masks = sorted(folder.glob("*_mask.tif"), key=lambda p: int(p.stem.split("_")[-2]))
        features = shape_features(folder.name, np.stack([read_mask(p) for p in masks]))
        row = rows[folder.name]
        assert int(row["volume_voxels"]) == features.volume_voxels
        for name in ("bevr", "margin_fluctuation", "angular_sd"):
            assert float(row[name]) == pytest.approx(getattr(features, name), rel=1e-5)


def test_regenerating_the_table_on_the_sample_writes_the_same_rows(sample_dir: Path, tmp_path: Path) -> None:
    rows = compute_cohort_rows(sample_dir, log=lambda _: None)
    target = tmp_path / "cohort.csv"
    write_cohort_table(rows, target)
    written = list(csv.DictReader(target.read_text().splitlines()))
    shipped = {r["patient"]: r for r in shipped_rows()}
    assert [r["patient"] for r in written] == sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    for row in written:
        assert row == shipped[row["patient"]]


@pytest.mark.slow
@pytest.mark.full_data
def test_shipped_table_is_the_full_data_sets_truth(full_data: Path, tmp_path: Path) -> None:
    target = tmp_path / "cohort.csv"
    write_cohort_table(compute_cohort_rows(full_data, log=lambda _: None), target)
    assert target.read_text() == resources.files("lggseg.shape").joinpath(COHORT_FILE).read_text()


def ellipsoid(semi: tuple[float, float, float], shape: tuple[int, int, int] = (16, 64, 64)) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [(s - 1) / 2 for s in shape]
    return ((z - c[0]) / semi[0]) ** 2 + ((y - c[1]) / semi[1]) ** 2 + ((x - c[2]) / semi[2]) ** 2 <= 1


def test_case_shape_is_shape_features_and_its_percentiles() -> None:
    mask = ellipsoid((5, 14, 20))
    mask[8, 10:14, 40:54] = True  # a bump on the largest slice: MF and ASD above zero
    cohort = parse_cohort(SMALL)
    measured = case_shape(mask, cohort)
    expected = shape_features("case", mask)
    assert measured is not None and measured.dimensions == 3
    assert measured.values["volume_voxels"] == expected.volume_voxels == int(mask.sum())
    for name in ("bevr", "margin_fluctuation", "angular_sd"):
        assert measured.values[name] == getattr(expected, name)
        assert measured.percentiles[name] == percentile_of(cohort.values[name], getattr(expected, name))
    assert measured.percentiles["volume_voxels"] == 100.0  # thousands of voxels against 10..50
    assert 0.4 < measured.values["bevr"] < 0.5 and measured.percentiles["bevr"] == 80.0  # 4 of 5 below
    areas = mask.sum(axis=(1, 2))
    assert measured.largest_slice == int(np.argmax(areas)) == 8


def test_case_shape_of_one_slice_has_no_bevr_and_an_empty_mask_no_shape() -> None:
    one = ellipsoid((5, 14, 20))[8:9]
    measured = case_shape(one, parse_cohort(SMALL))
    assert measured is not None and measured.dimensions == 2 and measured.largest_slice == 0
    assert measured.values["bevr"] is None and measured.percentiles["bevr"] is None
    assert measured.percentiles["volume_voxels"] is None and measured.values["volume_voxels"] == one.sum()
    expected = shape_features("case", one)
    assert measured.values["margin_fluctuation"] == expected.margin_fluctuation
    assert measured.percentiles["angular_sd"] == percentile_of([0.2, 0.3, 0.4, 0.5], expected.angular_sd)
    assert case_shape(np.zeros((4, 8, 8), bool)) is None
    with pytest.raises(ValueError, match="Z, H, W"):
        case_shape(np.ones((8, 8), bool))
