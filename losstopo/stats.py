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
