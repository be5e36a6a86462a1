"""Plain statistics: the record a test returns, Holm's adjustment, slopes and bootstrap intervals.

The tests behind the claims, and the verdict rules, are in :mod:`losstopo.evidence`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def scipy_stats():
    """scipy.stats, imported at the first test: the compute stages import the claims' code but test nothing, and
    the import took ~1 s of each stage process's start."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float  # one-sided, in the claimed direction
    effect_size: float
    effect_name: str
    n: int
    p_opposite: float = float("nan")  # one-sided, in the opposite direction (for "contradicted")
    min_attainable_p: float = float("nan")  # smallest p this test can give at this n and design

    def as_dict(self) -> dict:
        return asdict(self)


def theil_sen_slope(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return float(scipy_stats().theilslopes(y[keep], x[keep]).slope)


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
