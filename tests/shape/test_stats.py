"""The statistics on tiny hand-computed tables and brute-force references."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lggseg.shape import stats


def brute_force_p(table: np.ndarray) -> float:
    """Freeman-Halton p by listing every (2, k) table with the same margins."""
    cols = table.sum(axis=0)
    n, r1 = int(cols.sum()), int(table[0].sum())
    probs = []
    for first in itertools.product(*(range(c + 1) for c in cols)):
        if sum(first) == r1:
            probs.append(math.prod(math.comb(int(c), x) for c, x in zip(cols, first)) / math.comb(n, r1))
    observed = math.prod(math.comb(int(c), int(x)) for c, x in zip(cols, table[0])) / math.comb(n, r1)
    return sum(p for p in probs if p <= observed * (1 + 1e-7))


TABLES_2X2 = [[[3, 1], [1, 3]], [[10, 2], [3, 15]], [[0, 5], [5, 0]], [[7, 7], [7, 7]], [[1, 9], [11, 3]]]


@pytest.mark.parametrize("table", TABLES_2X2)
def test_2x2_equals_scipy_fisher_exact(table: list[list[int]]) -> None:
    _, p = stats.freeman_halton(table)
    assert p == pytest.approx(scipy_stats.fisher_exact(table)[1], rel=1e-9)


def test_2x3_by_hand() -> None:
    # Margins: rows (3, 3), columns (2, 2, 2), N = 6, C(6, 3) = 20 tables' worth of probability.
    # First rows that are permutations of (2, 1, 0) each have P = C(2,2) C(2,1) C(2,0) / 20 = 2/20;
    # (1, 1, 1) has P = 8/20. Observing (2, 0, 1): p = 6 x 0.1 = 0.6. Observing (1, 1, 1): p = 1.
    p_obs, p = stats.freeman_halton([[2, 0, 1], [0, 2, 1]])
    assert p_obs == pytest.approx(0.1)
    assert p == pytest.approx(0.6)
    assert stats.freeman_halton([[1, 1, 1], [1, 1, 1]])[1] == pytest.approx(1.0)
    assert stats.freeman_halton([[2, 0], [0, 2], [1, 1]])[1] == pytest.approx(0.6)  # (k, 2) is transposed


def test_2xk_matches_brute_force_enumeration() -> None:
    rng = np.random.default_rng(0)
    for _ in range(15):
        k = int(rng.integers(2, 5))
        table = rng.integers(0, 7, size=(2, k))
        if table.sum(axis=0).min() == 0 or table.sum(axis=1).min() == 0:
            continue
        assert stats.freeman_halton(table)[1] == pytest.approx(brute_force_p(table), rel=1e-9)


def test_freeman_halton_is_fast_for_the_cohort_size() -> None:
    table = np.array([[12, 9, 8, 11, 10], [8, 11, 12, 9, 10]])  # n = 100, k = 5
    start = time.perf_counter()
    p_obs, p = stats.freeman_halton(table)
    assert time.perf_counter() - start < 1.0
    assert 0 < p_obs < p <= 1


def test_median_split_and_contingency() -> None:
    values = np.array([1.0, 2.0, 3.0, 3.0, 5.0, np.nan, 7.0])
    labels = ["1", "2", "1", "2", "10", "1", ""]
    high = stats.median_split(values)
    assert high.tolist() == [False, False, False, False, True, False, True]  # median 3: ties go low
    table, groups = stats.contingency(values, labels)
    assert groups == ["1", "2", "10"]  # NaN value and missing label dropped; numeric order
    # The median is taken over the patients of this test (values 1, 2, 3, 3, 5 -> 3): only 5 is high.
    assert table.tolist() == [[2, 2, 0], [0, 0, 1]]


def test_fisher_and_kruskal_tests_on_labelled_values() -> None:
    values = np.arange(12, dtype=float)
    labels = ["a"] * 6 + ["b"] * 6
    fisher = stats.fisher_median_test(values, labels)
    assert fisher.n == 12
    assert fisher.p_value == pytest.approx(scipy_stats.fisher_exact([[6, 0], [0, 6]])[1])
    kw = stats.kruskal_test(values, labels)
    assert kw.p_value == pytest.approx(scipy_stats.kruskal(values[:6], values[6:]).pvalue)
    assert math.isnan(stats.kruskal_test(np.ones(6), labels[:6]).p_value)  # one group
    assert math.isnan(stats.fisher_median_test(values, [""] * 12).p_value)


def test_corrections_on_a_hand_example() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(stats.bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # Holm: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06.
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: 0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04.
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    with_nan = stats.bonferroni([0.2, math.nan, 0.6])
    assert with_nan[0] == pytest.approx(0.4) and math.isnan(with_nan[1]) and with_nan[2] == 1.0
    assert stats.holm([0.2, math.nan, 0.6]).tolist()[0] == pytest.approx(0.4)


def test_auc_is_the_mann_whitney_statistic() -> None:
    assert stats.auc(np.array([1, 2, 3, 4.0]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert stats.auc(np.array([4, 3, 2, 1.0]), np.array([0, 0, 1, 1], bool)) == 0.0
    assert stats.auc(np.array([1, 1, 1, 1.0]), np.array([0, 0, 1, 1], bool)) == 0.5
    rng = np.random.default_rng(1)
    scores, labels = rng.integers(0, 5, 30).astype(float), rng.random(30) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert stats.auc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))
    assert math.isnan(stats.auc(np.ones(3), np.zeros(3, bool)))
    aucs = stats.one_vs_rest_auc(np.array([1, 2, 3, 4.0]), ["1", "1", "2", "2"])
    assert aucs == {"1": 0.0, "2": 1.0}


def test_agreement_spearman_and_bland_altman() -> None:
    manual = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    same = stats.agreement(manual, manual)
    assert same.spearman_rho == pytest.approx(1.0)
    assert same.mean_difference == 0 and same.loa_low == 0 and same.loa_high == 0
    shifted = stats.agreement(manual + np.array([1.0, 3.0, 1.0, 3.0, 2.0]), manual)
    assert shifted.mean_difference == pytest.approx(2.0)
    sd = np.std([1, 3, 1, 3, 2], ddof=1)
    assert shifted.loa_low == pytest.approx(2 - 1.96 * sd) and shifted.loa_high == pytest.approx(2 + 1.96 * sd)
    assert stats.agreement(np.array([1.0, np.nan]), np.array([1.0, 2.0])).n == 1
