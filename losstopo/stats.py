"""Statistical tests behind each paper claim, returned as plain records for the claims table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect_size: float
    effect_name: str
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def trend_test(x: Sequence[float], y: Sequence[float], direction: str = "decreasing") -> TestResult:
    """One-sided Kendall tau test of a monotone trend of y in x.

    Kendall's tau handles ties in x (several bars per depth) and is its own effect size; the
    Theil-Sen slope is reported beside it in :func:`theil_sen_slope`.
    """
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction must be 'decreasing' or 'increasing', got {direction!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    alternative = "less" if direction == "decreasing" else "greater"
    tau, p = stats.kendalltau(x, y, alternative=alternative)
    return TestResult(f"Kendall tau, one-sided ({direction})", float(tau), float(p), float(tau), "tau", int(len(x)))


def theil_sen_slope(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return float(stats.theilslopes(y[keep], x[keep]).slope)


def verdict(result: TestResult, alpha: float = 0.05) -> str:
    """'supported' only at significance; a trend in the claimed direction without it is 'inconclusive'."""
    if result.p_value < alpha:
        return "supported"
    claimed_sign = -1 if "decreasing" in result.test else 1
    return "inconclusive" if np.sign(result.effect_size) == claimed_sign else "not supported"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1), the products are made
    non-decreasing in that order, and capped at 1. Rejecting where the adjusted value is below alpha
    controls the family-wise error rate at alpha. NaN p-values stay NaN and do not count in m.
    """
    p = np.asarray(p_values, float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def group_test(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b")) -> TestResult:
    """One-sided Mann-Whitney U test that values in ``a`` tend to exceed those in ``b``.

    The statistic is U of ``a``; the effect size is the rank-biserial correlation 2U/(n_a n_b) - 1,
    positive when ``a`` is larger (+1: every value of ``a`` above every value of ``b``). Non-finite
    values are dropped; with an empty group the test is undefined and p = 1.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    name = f"Mann-Whitney U, one-sided ({names[0]} > {names[1]})"
    if len(a) == 0 or len(b) == 0:
        return TestResult(name, float("nan"), 1.0, 0.0, "rank-biserial r", int(len(a) + len(b)))
    u, p = stats.mannwhitneyu(a, b, alternative="greater")
    return TestResult(name, float(u), float(p), float(2 * u / (len(a) * len(b)) - 1), "rank-biserial r",
                      int(len(a) + len(b)))


def binomial_test(successes: int, n: int, p0: float = 0.5) -> TestResult:
    """One-sided exact binomial test that the success probability exceeds ``p0`` ("in most cases").

    The statistic is the observed fraction; the effect size is its excess over ``p0``, positive
    in the claimed direction (so :func:`verdict` reads it like a trend in the claimed direction).
    """
    if not 0 <= successes <= n or n < 1:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = stats.binomtest(int(successes), int(n), p0, alternative="greater").pvalue
    fraction = successes / n
    return TestResult(f"exact binomial, one-sided (fraction > {p0:g})", float(fraction), float(p),
                      float(fraction - p0), f"fraction-{p0:g}", int(n))


def below_threshold_test(values: Sequence[float], threshold: float) -> TestResult:
    """One-sided Wilcoxon signed-rank test that the values lie below ``threshold`` (location < threshold).

    Distribution-free (drops along paths are skewed: most near zero, a few larger). The
    statistic is the median value; the effect size is the margin ``threshold - median``,
    positive in the claimed direction. Non-finite values are dropped.
    """
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return TestResult("Wilcoxon signed-rank, one-sided (below threshold)", float("nan"), float("nan"),
                          float("nan"), "margin", 0)
    differences = values - threshold
    if np.all(differences == 0):
        p = 1.0
    else:
        p = float(stats.wilcoxon(differences, alternative="less").pvalue)
    median = float(np.median(values))
    return TestResult(f"Wilcoxon signed-rank, one-sided (below {threshold:g})", median, p,
                      float(threshold - median), "margin", int(len(values)))


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_resamples: int = 10000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (deterministic for a given seed)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def rank_correlation_test(x: Sequence[float], y: Sequence[float], alternative: str = "greater") -> TestResult:
    """One-sided Spearman rank correlation test of a monotone association between x and y.

    ``alternative="greater"``: y increases with x (rho > 0); ``"less"``: y decreases with x. The
    statistic and the effect size are Spearman's rho (its p-value from scipy's t approximation).
    Pairs with a non-finite value are dropped; with fewer than 3 pairs or a constant variable the
    correlation is undefined: rho = NaN, effect 0, p = 1.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    name = f"Spearman rho, one-sided ({'increasing' if alternative == 'greater' else 'decreasing'})"
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return TestResult(name, float("nan"), 1.0, 0.0, "rho", int(len(x)))
    rho, p = stats.spearmanr(x, y, alternative=alternative)
    return TestResult(name, float(rho), float(p), float(rho), "rho", int(len(x)))
