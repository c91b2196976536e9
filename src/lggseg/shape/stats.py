"""Association tests between shape features and genomic subtypes, and agreement statistics.

* The paper's test (Buda, Saha & Mazurowski, Comput Biol Med 109 (2019) 218-225): each feature is
  split into two groups at its median (``value > median`` is "high"; values equal to the median go
  to "low"; the median of the patients in that test, i.e. with a finite feature and a known
  cluster) and cross-tabulated against the clusters of a genomic subtype, giving a ``(2, k)``
  table tested with Fisher's exact test. For ``k > 2`` that is the Freeman-Halton extension,
  computed here *exactly* by enumerating every table with the observed margins (a dynamic
  programme over the columns; ~10^5 tables for n = 100, k = 5, well under a second). The p-value
  sums the probabilities of all tables no more probable than the observed one (relative tolerance
  1e-7, as R's ``fisher.test`` and ``scipy.stats.fisher_exact``), so for 2x2 it equals scipy's
  two-sided p-value.
* Kruskal-Wallis (``scipy.stats.kruskal``) on the continuous feature across clusters, as a second
  view that does not throw away the ordering within the median groups.
* Multiple testing: Bonferroni (as the paper) and Holm (uniformly more powerful, same family-wise
  error guarantee); Benjamini-Hochberg is provided for exploratory use.
* Automatic vs manual agreement: ROC AUC by the Mann-Whitney statistic, Spearman correlation and
  Bland-Altman bias and 95 % limits of agreement.

Arrays: ``values`` are ``(n,)`` float (NaN = missing), ``labels`` are ``(n,)`` strings ("" = missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats
from scipy.special import gammaln

_REL_TOL = 1e-7


def _log_choose(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    """``log C(n, k)``, elementwise."""
    n_, k_ = np.asarray(n, dtype=float), np.asarray(k, dtype=float)
    return gammaln(n_ + 1.0) - gammaln(k_ + 1.0) - gammaln(n_ - k_ + 1.0)


def freeman_halton(table: np.ndarray | Sequence[Sequence[int]]) -> tuple[float, float]:
    """Exact two-sided test of independence for a ``(2, k)`` (or ``(k, 2)``) table of counts.

    Returns ``(p_observed, p_value)``: the hypergeometric probability of the observed table given
    its margins, and the sum of the probabilities of all tables with the same margins whose
    probability is at most ``p_observed * (1 + 1e-7)``. Columns (clusters) with no patient are
    dropped. A table with fewer than two non-empty columns or an empty row has p = 1.
    """
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or 2 not in t.shape or np.any(t < 0):
        raise ValueError(f"expected a (2, k) table of non-negative counts, got shape {t.shape}")
    if t.shape[0] != 2:
        t = t.T
    t = t[:, t.sum(axis=0) > 0]
    cols = t.sum(axis=0)
    n = int(cols.sum())
    r1 = int(t[0].sum())
    log_total = float(_log_choose(n, r1))
    log_obs = float(np.sum(_log_choose(cols, t[0]))) - log_total
    if t.shape[1] < 2 or r1 in (0, n):
        return float(math.exp(log_obs)), 1.0
    # states: first-row partial sum -> log-probability numerators of all partial tables
    states: dict[int, np.ndarray] = {0: np.zeros(1)}
    remaining = int(cols.sum())
    for c in cols.tolist():
        remaining -= c
        grown: dict[int, list[np.ndarray]] = {}
        for s, logs in states.items():
            lo = max(0, r1 - s - remaining)
            hi = min(c, r1 - s)
            for x in range(lo, hi + 1):
                grown.setdefault(s + x, []).append(logs + float(_log_choose(c, x)))
        states = {s: np.concatenate(parts) for s, parts in grown.items()}
    logs = states[r1] - log_total
    keep = logs <= log_obs + math.log1p(_REL_TOL)
    p = float(np.exp(logs[keep]).sum())
    return float(math.exp(log_obs)), min(1.0, p)


def median_split(values: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: True where ``value > median`` of the finite values (ties go to the low group)."""
    v = np.asarray(values, dtype=float)
    return v > np.nanmedian(v)


def _paired(values: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    lab = np.asarray([str(x) for x in labels], dtype=object)
    ok = np.isfinite(v) & (lab != "")
    return v[ok], lab[ok]


def contingency(values: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Median-split ``(2, k)`` table (rows: low, high) over the sorted cluster labels present.

    Patients without a finite value or a label are dropped first; the median is theirs.
    """
    v, lab = _paired(values, labels)
    groups = sorted(set(lab.tolist()), key=natural_key)
    if v.size == 0:
        return np.zeros((2, 0), int), groups
    high = median_split(v)
    table = np.array([[int(np.sum(side & (lab == g))) for g in groups] for side in (~high, high)])
    return table, groups


def natural_key(text: str) -> tuple[float, str]:
    """Sort key: numeric labels by value ("2" before "10"), then the others by text."""
    try:
        return float(text), text
    except ValueError:
        return math.inf, text


@dataclass(frozen=True)
class TestResult:
    """One test of one feature against one genomic subtype."""

    test: str
    statistic: float
    p_value: float
    n: int


def fisher_median_test(values: np.ndarray, labels: Sequence[str]) -> TestResult:
    """The paper's test: median split of the feature x clusters, exact (Freeman-Halton) p-value.

    ``statistic`` is the hypergeometric probability of the observed table.
    """
    table, _ = contingency(values, labels)
    n = int(table.sum())
    if n == 0 or table.shape[1] < 2:
        return TestResult("fisher", math.nan, math.nan, n)
    p_obs, p = freeman_halton(table)
    return TestResult("fisher", p_obs, p, n)


def kruskal_test(values: np.ndarray, labels: Sequence[str]) -> TestResult:
    """Kruskal-Wallis H across clusters (NaN when fewer than two clusters or all values tie)."""
    v, lab = _paired(values, labels)
    groups = [v[lab == g] for g in sorted(set(lab.tolist()), key=natural_key)]
    if len(groups) < 2 or np.unique(v).size < 2:
        return TestResult("kruskal", math.nan, math.nan, int(v.size))
    h, p = stats.kruskal(*groups)
    return TestResult("kruskal", float(h), float(p), int(v.size))


def _finite_p(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_values, dtype=float)
    return p, np.isfinite(p)


def bonferroni(p_values: Sequence[float]) -> np.ndarray:
    """``min(1, m p)`` with m = number of finite p-values; NaN stays NaN."""
    p, ok = _finite_p(p_values)
    out = np.full_like(p, np.nan)
    out[ok] = np.minimum(1.0, p[ok] * ok.sum())
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (monotone, capped at 1); NaN stays NaN."""
    p, ok = _finite_p(p_values)
    out = np.full_like(p, np.nan)
    finite = p[ok]
    m = finite.size
    order = np.argsort(finite, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * finite[order])
    result = np.empty(m)
    result[order] = np.minimum(1.0, adjusted)
    out[ok] = result
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (FDR); NaN stays NaN."""
    p, ok = _finite_p(p_values)
    out = np.full_like(p, np.nan)
    finite = p[ok]
    m = finite.size
    order = np.argsort(finite, kind="stable")
    ranked = finite[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(1.0, adjusted)
    out[ok] = result
    return out


CORRECTIONS = {"bonferroni": bonferroni, "holm": holm}
"""The corrections written to ``associations.csv``."""


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``(n,)`` scores for ``(n,)`` bool labels: Mann-Whitney U / (n1 n0), ties count 1/2.

    NaN scores are dropped; NaN when either class is empty.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = stats.rankdata(s)
    u = ranks[y].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def one_vs_rest_auc(values: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """AUC of the feature for each cluster against all the other clusters (patients with a label)."""
    v, lab = _paired(values, labels)
    return {g: auc(v, lab == g) for g in sorted(set(lab.tolist()), key=natural_key)}


@dataclass(frozen=True)
class Agreement:
    """Automatic vs manual values of one feature: Spearman rho and Bland-Altman numbers."""

    n: int
    spearman_rho: float
    spearman_p: float
    mean_difference: float
    sd_difference: float
    loa_low: float
    loa_high: float


def agreement(automatic: np.ndarray, manual: np.ndarray) -> Agreement:
    """Spearman and Bland-Altman (difference = automatic - manual; limits = mean +- 1.96 SD, ddof 1)."""
    a = np.asarray(automatic, dtype=float)
    m = np.asarray(manual, dtype=float)
    ok = np.isfinite(a) & np.isfinite(m)
    a, m = a[ok], m[ok]
    n = int(a.size)
    if n < 3:
        return Agreement(n, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    if np.unique(a).size < 2 or np.unique(m).size < 2:
        rho, p = math.nan, math.nan
    else:
        result = stats.spearmanr(a, m)
        rho, p = float(result.statistic), float(result.pvalue)
    diff = a - m
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1))
    return Agreement(n, rho, p, mean, sd, mean - 1.96 * sd, mean + 1.96 * sd)
