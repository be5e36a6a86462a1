"""Verdicts that are evidence: calibrated permutation tests, their attainable p, and the gates a claim
must pass before it gets a verdict at all.

A claim is ``supported`` / ``contradicted`` / ``inconclusive`` only when (in this order):
1. at least :data:`CONVERGED_NEEDED` of its inputs met their convergence rule (else ``not converged``);
2. its stated premise holds (else ``premise failed``);
3. the smallest p-value its test can reach at this n and design is below alpha (else ``underpowered``);
then, with p adjusted over the family of claims that passed the gates (:func:`adjust`), it is
``supported`` when the claimed direction is significant and the procedure's measured false-positive
rate on its null model (:func:`null_rate`) is within :data:`NULL_RATE_BOUND`, ``contradicted`` when
the opposite direction is significant, and ``inconclusive`` otherwise.

Every test here is a permutation (randomisation) test over the independent units of the claim, exact
where the number of distinct relabellings is small and Monte Carlo (p = (1 + hits) / (1 + draws))
otherwise, so its p-value is valid at any n and its smallest attainable value is known.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from losstopo.stats import TestResult, holm, scipy_stats

ALPHA = 0.05
CONVERGED_NEEDED = 0.9
NULL_DRAWS = 400
# alpha plus about 1.6 Monte Carlo standard errors of a rate measured from NULL_DRAWS draws.
NULL_RATE_BOUND = 0.07
PERMUTATIONS = 4000
EXACT_LIMIT = 50_000  # relabellings enumerated exactly up to this many
# A trend test's relabellings differ only in which units sit at which level of x: n! / prod(m_k!) distinct ones
# (the FC design, 5 depths x 2 sets: 113,400), each standing for prod(m_k!) equally likely permutations. They are
# enumerated while their sign matrices (arrangements x n^2 float32) stay under ~80 MB.
ARRANGEMENT_SIGNS_LIMIT = 20_000_000

VERDICTS = {
    "supported": "the test in the paper's direction is significant at alpha = 0.05 after the report-wide "
                 "adjustment, on converged inputs, with a calibrated test (null rate <= 0.05 up to MC error)",
    "contradicted": "the test in the opposite direction is significant after the same adjustment",
    "inconclusive": "the test could have been significant but neither direction is",
    "underpowered": "the smallest p-value attainable at this n and design (for a permutation test: given "
                    "the ties among the observed values, on which it conditions) exceeds alpha: no outcome "
                    "could have been significant",
    "not converged": "fewer than 90% of the claim's inputs (minima, paths, curves, descents) met their "
                     "convergence rule, or convergence was not measured",
    "premise failed": "a stated premise of the claim does not hold (e.g. near-equal training loss)",
}


@dataclass(frozen=True)
class Relabelling:
    """The relabellings of a permutation test: rows of indices into the observed values."""

    rows: np.ndarray  # (R, n) permutations of range(n)
    exact: bool  # every distinct relabelling is there once (else: random draws)


def kendall_s(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Kendall's S = sum_{i<j} sign(x_i - x_j) sign(y_i - y_j) of each row of ys (R, n) against x (n,)."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(ys[:, :, None] - ys[:, None, :])
    return (sx[None] * sy).sum(axis=(1, 2)) / 2


def _permutations(n: int, draws: int, rng: np.random.Generator) -> Relabelling:
    if math.factorial(n) <= EXACT_LIMIT:
        return Relabelling(np.array(list(itertools.permutations(range(n)))), True)
    return Relabelling(np.argsort(rng.random((draws, n)), axis=1), False)


def arrangement_count(x: Sequence[float]) -> int:
    """n! / prod(m_k!): the distinct assignments of the levels of ``x`` to its n units (m_k units at level k)."""
    _, counts = np.unique(np.asarray(x, float), return_counts=True)
    return math.factorial(len(x)) // math.prod(math.factorial(int(m)) for m in counts)


def level_arrangements(x: Sequence[float]) -> np.ndarray:
    """Every distinct assignment of the levels of ``x`` to its n units, once: rows (n! / prod(m_k!), n) of
    level values, each level k on m_k units, as often as in ``x``."""
    levels, counts = np.unique(np.asarray(x, float), return_counts=True)
    rows = [np.full(len(x), np.nan)]
    for level, count in zip(levels, counts):
        grown = []
        for row in rows:
            free = np.flatnonzero(np.isnan(row))
            for chosen in itertools.combinations(free, int(count)):
                new_row = row.copy()
                new_row[list(chosen)] = level
                grown.append(new_row)
        rows = grown
    return np.array(rows)


@functools.lru_cache(maxsize=2)
def _arrangement_signs(x: tuple[float, ...]) -> np.ndarray | None:
    """sign(a_i - a_j) of every distinct level arrangement a of design x, flattened (R, n*n), or None where
    they would exceed :data:`ARRANGEMENT_SIGNS_LIMIT` values (cached: a claim and its null rate reuse one design)."""
    if arrangement_count(x) * len(x) ** 2 > ARRANGEMENT_SIGNS_LIMIT:
        return None
    rows = level_arrangements(x)
    return np.sign(rows[:, :, None] - rows[:, None, :]).reshape(len(rows), -1).astype(np.float32)


def _kendall_null(x: np.ndarray, y: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, bool]:
    """Kendall's S of y against x under every relabelling of the units: each distinct arrangement of the levels
    once (exact, each standing for the same number of permutations) where they fit
    :data:`ARRANGEMENT_SIGNS_LIMIT`, else ``draws`` random permutations (Monte Carlo). Returns (S values, exact)."""
    signs = _arrangement_signs(tuple(float(v) for v in x))
    if signs is not None:  # S is symmetric in its two arguments: arrange the levels instead of the values
        return signs @ np.sign(y[:, None] - y[None, :]).astype(np.float32).ravel() / 2, True
    relabel = _permutations(len(x), draws, np.random.default_rng(seed))
    return kendall_s(x, y[relabel.rows]), relabel.exact


def _p_values(observed: float, null: np.ndarray, exact: bool) -> tuple[float, float]:
    """(p of 'statistic this small', p of 'this large'); exact: fraction of all relabellings, else the
    Monte Carlo estimate that counts the observed labelling as one draw."""
    low, high = np.sum(null <= observed + 1e-12), np.sum(null >= observed - 1e-12)
    if exact:
        return float(low / len(null)), float(high / len(null))
    return float((1 + low) / (1 + len(null))), float((1 + high) / (1 + len(null)))


def _enumeration(null: np.ndarray, exact: bool) -> str:
    """How a permutation test's p was computed, for its name in the claims table."""
    return f"exact over all {len(null):,} relabellings" if exact else f"Monte Carlo over {len(null):,} relabellings"


def at_resolution(values: Sequence[float], resolution: float) -> np.ndarray:
    """``values`` rounded to multiples of ``resolution`` (0: unchanged), so that differences the
    measurement cannot resolve (e.g. barriers below the minima's own convergence resolution) enter a
    rank test as ties rather than as an ordering."""
    values = np.asarray(values, float)
    if resolution < 0:
        raise ValueError(f"resolution must be >= 0, got {resolution}")
    return values if resolution == 0 else np.round(values / resolution) * resolution


def _require_direction(direction: str) -> None:
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction must be 'decreasing' or 'increasing', got {direction!r}")


def _no_trend_design(x: np.ndarray) -> bool:
    """Fewer than two units, or one level of x: no trend can be tested."""
    return len(x) < 2 or np.ptp(x) == 0


def _untestable(name: str, n: int) -> TestResult:
    """The result of a test its design cannot run: no statistic, and no p below 1 attainable."""
    return TestResult(name, float("nan"), float("nan"), float("nan"), "tau", n, float("nan"), 1.0)


def trend_test(x: Sequence[float], y: Sequence[float], direction: str = "decreasing", *,
               draws: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """Permutation test of a monotone trend of y in x (Kendall's S; whole units permuted over x).

    One value per independent unit (a network, a set of minima, a teacher): the null is that the units'
    values are exchangeable across the levels of x. Ties in x (replicates per level) are allowed.
    """
    _require_direction(direction)
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    name = f"permutation test of Kendall's S, one-sided ({direction})"
    if _no_trend_design(x):
        return _untestable(name, len(x))
    null, exact = _kendall_null(x, y, draws, seed)
    observed = float(kendall_s(x, y[None])[0])
    p_less, p_greater = _p_values(observed, null, exact)
    p, p_other = (p_less, p_greater) if direction == "decreasing" else (p_greater, p_less)
    tau = float(scipy_stats().kendalltau(x, y).statistic) if np.ptp(y) > 0 else 0.0
    # the best ordering of these values (ties kept): the most extreme statistic any relabelling reaches
    best = np.sort(y)[::-1] if direction == "decreasing" else np.sort(y)
    reached = _p_values(float(kendall_s(np.sort(x), best[None])[0]), null, exact)
    reached_p = reached[0] if direction == "decreasing" else reached[1]
    return TestResult(f"{name}, {_enumeration(null, exact)}", observed, p, tau, "tau", len(x), p_other,
                      max(trend_min_p(x, draws, exact), reached_p))


def interval_trend_test(x: Sequence[float], lower: Sequence[float], upper: Sequence[float],
                        direction: str = "decreasing", *, draws: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """:func:`trend_test` of values known only within measured bounds: unit i's value lies in [lower_i, upper_i].

    Each pair of units at different x adds to Kendall's S its least favourable sign for the claimed direction
    over the two intervals (its most favourable one for the opposite direction's p), so S is bounded over every
    assignment of values inside the bounds, and the p-value, read from the null distribution of S for distinct
    values (continuous values are distinct), is the largest any such assignment could give: valid whichever
    values the bounds hold. Point bounds (lower = upper, distinct) give :func:`trend_test`'s p."""
    _require_direction(direction)
    x, lower, upper = (np.asarray(v, float) for v in (x, lower, upper))
    if np.any(lower > upper):
        raise ValueError("every lower bound must be <= its upper bound")
    name = f"permutation test of Kendall's S at its least favourable over each unit's bounds, one-sided ({direction})"
    if _no_trend_design(x):
        return _untestable(name, len(x))
    earlier = x[:, None] < x[None, :]  # pairs (i, j) with x_i < x_j; their S term is -sign(y_i - y_j)
    s_high = float(np.sum(-np.sign(lower[:, None] - upper[None, :])[earlier]))  # the largest S in the bounds
    s_low = float(np.sum(-np.sign(upper[:, None] - lower[None, :])[earlier]))  # the smallest
    null, exact = _kendall_null(x, np.arange(len(x), dtype=float), draws, seed)
    p_high_small = _p_values(s_high, null, exact)[0]  # decreasing: even the largest S is this small
    p_low_large = _p_values(s_low, null, exact)[1]  # increasing: even the smallest S is this large
    observed, p, p_other = ((s_high, p_high_small, p_low_large) if direction == "decreasing"
                            else (s_low, p_low_large, p_high_small))
    pairs = math.comb(len(x), 2)
    _, counts = np.unique(x, return_counts=True)
    tied_x = sum(math.comb(int(m), 2) for m in counts)
    tau = observed / math.sqrt((pairs - tied_x) * pairs)  # Kendall's tau-b of distinct values
    return TestResult(f"{name}, {_enumeration(null, exact)}", observed, p, tau, "tau (least favourable)", len(x),
                      p_other, trend_min_p(x, draws, exact))


def trend_min_p(x: np.ndarray, draws: int, exact: bool) -> float:
    """Smallest attainable p of :func:`trend_test` at design x, for distinct values: the perfect ordering is
    reached by prod(m_k!) of the n! relabellings (m_k units at level k). Tied values can only raise it: the
    test conditions on the observed values, so :func:`trend_test` reports the larger of this and the p of
    the best ordering of the values it was given (all values tied: 1)."""
    fraction = 1 / arrangement_count(x)
    return fraction if exact else max(fraction, 1 / (1 + draws))


def group_test(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b"), *,
               draws: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """Permutation test that values in ``a`` tend to exceed those in ``b`` (Mann-Whitney U, labels
    permuted over the units). Effect: rank-biserial r = 2U / (n_a n_b) - 1."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    name = f"permutation test of Mann-Whitney U, one-sided ({names[0]} > {names[1]})"
    n_a, n = len(a), len(a) + len(b)
    if n_a == 0 or len(b) == 0:
        return TestResult(name, float("nan"), float("nan"), float("nan"), "rank-biserial r", n, float("nan"), 1.0)
    values = scipy_stats().rankdata(np.concatenate([a, b]))
    total = math.comb(n, n_a)
    if total <= EXACT_LIMIT:
        members = np.array(list(itertools.combinations(range(n), n_a)))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        members = np.argsort(rng.random((draws, n)), axis=1)[:, :n_a]
        exact = False
    null = values[members].sum(axis=1)
    observed = float(values[:n_a].sum())
    p_less, p_greater = _p_values(observed, null, exact)
    u = observed - n_a * (n_a + 1) / 2
    # conditional on the observed ranks (ties included): the largest rank sum any labelling reaches
    reached = _p_values(float(np.sort(values)[-n_a:].sum()), null, exact)[1]
    min_p = max(1 / total if exact else max(1 / total, 1 / (1 + draws)), reached)
    return TestResult(f"{name}, {_enumeration(null, exact)}", u, p_greater, float(2 * u / (n_a * len(b)) - 1),
                      "rank-biserial r", n, p_less, min_p)


def linear_statistic_test(values: Sequence[float], weights: Sequence[float], name: str, effect_name: str, *,
                          draws: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """Permutation test that the linear statistic ``weights . values`` is small (claimed direction),
    values permuted over the units (exact up to :data:`EXACT_LIMIT` orderings). A difference of slopes
    (e.g. Fig. 4b's "steeper when a layer is added") is such a statistic."""
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return TestResult(name, float("nan"), float("nan"), float("nan"), effect_name, len(values), float("nan"), 1.0)
    relabel = _permutations(len(values), draws, np.random.default_rng(seed))
    null = values[relabel.rows] @ weights
    observed = float(values @ weights)
    p, p_other = _p_values(observed, null, relabel.exact)
    # the most extreme ordering of these values: the smallest statistic any relabelling reaches
    reached = np.sort(values)[np.argsort(np.argsort(-weights))] @ weights
    smallest = _p_values(float(reached), null, relabel.exact)[0]
    return TestResult(f"{name}, {_enumeration(null, relabel.exact)}", observed, p, observed, effect_name,
                      len(values), p_other, max(smallest, 1 / math.factorial(len(values))))


def linear_null_rate(weights: Sequence[float], draws: int = NULL_DRAWS) -> float:
    """Size of :func:`linear_statistic_test` with i.i.d. unit values."""
    weights = np.asarray(weights, float)
    return null_rate(lambda rng: linear_statistic_test(rng.standard_normal(len(weights)), weights, "", "",
                                                       draws=999, seed=int(rng.integers(2**31))), draws)


def binomial_test(successes: int, n: int, p0: float = 0.5) -> TestResult:
    """Exact one-sided binomial test that the success probability exceeds ``p0`` ("in most cases")."""
    if not 0 <= successes <= n or n < 1:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = float(scipy_stats().binomtest(int(successes), int(n), p0, alternative="greater").pvalue)
    p_other = float(scipy_stats().binomtest(int(successes), int(n), p0, alternative="less").pvalue)
    return TestResult(f"exact binomial, one-sided (fraction > {p0:g})", successes / n, p, successes / n - p0,
                      f"fraction-{p0:g}", int(n), p_other, float(p0 ** n))


def below_threshold_test(values: Sequence[float], threshold: float) -> TestResult:
    """Exact one-sided Wilcoxon signed-rank test that the values lie below ``threshold`` (the
    sign-flip permutation test of the ranks of |value - threshold|)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    name = f"Wilcoxon signed-rank, one-sided (below {threshold:g})"
    d = values - threshold
    d = d[d != 0]
    if len(d) == 0:
        return TestResult(name, float("nan"), float("nan"), float("nan"), "margin", len(values), float("nan"), 1.0)
    p = float(scipy_stats().wilcoxon(d, alternative="less", method="exact" if len(d) <= 25 else "auto").pvalue)
    p_other = float(scipy_stats().wilcoxon(d, alternative="greater", method="exact" if len(d) <= 25 else "auto").pvalue)
    median = float(np.median(values))
    return TestResult(name, median, p, float(threshold - median), "margin", len(values), p_other, 0.5 ** len(d))


def null_rate(procedure: Callable[[np.random.Generator], TestResult], draws: int = NULL_DRAWS,
              seed: int = 12345, alpha: float = ALPHA) -> float:
    """Fraction of ``draws`` null data sets on which the procedure rejects at ``alpha`` (its size)."""
    rng = np.random.default_rng(seed)
    rejections = [procedure(rng).p_value < alpha for _ in range(draws)]
    return float(np.mean(rejections))


def trend_null_rate(x: Sequence[float], direction: str = "decreasing", draws: int = NULL_DRAWS,
                    permutations: int = 999) -> float:
    """Size of :func:`trend_test` at design x when the units' values are i.i.d. (exchangeable over x).
    The inner test uses ``permutations`` draws where it is not exact (its MC p-value is valid for any)."""
    x = np.asarray(x, float)
    return null_rate(lambda rng: trend_test(x, rng.standard_normal(len(x)), direction, draws=permutations,
                                            seed=int(rng.integers(2**31))), draws)


def interval_trend_null_rate(x: Sequence[float], direction: str = "decreasing", relative_width: float = 0.1,
                             draws: int = NULL_DRAWS, permutations: int = 999) -> float:
    """Size of :func:`interval_trend_test` at design x when the units' values are i.i.d. standard normal and each
    is known within bounds reaching |N(0, relative_width)| below and above it."""
    x = np.asarray(x, float)

    def procedure(rng: np.random.Generator) -> TestResult:
        values = rng.standard_normal(len(x))
        below, above = np.abs(rng.normal(0.0, relative_width, (2, len(x))))
        return interval_trend_test(x, values - below, values + above, direction, draws=permutations,
                                   seed=int(rng.integers(2**31)))
    return null_rate(procedure, draws)


def group_null_rate(n_a: int, n_b: int, draws: int = NULL_DRAWS) -> float:
    """Size of :func:`group_test` with n_a and n_b i.i.d. units."""
    return null_rate(lambda rng: group_test(rng.standard_normal(n_a), rng.standard_normal(n_b),
                                            draws=999, seed=int(rng.integers(2**31))), draws)


def binomial_null_rate(n: int, p0: float = 0.5, draws: int = NULL_DRAWS) -> float:
    return null_rate(lambda rng: binomial_test(int(rng.binomial(n, p0)), n, p0), draws)


def below_threshold_null_rate(n: int, threshold: float = 0.0, draws: int = NULL_DRAWS) -> float:
    return null_rate(lambda rng: below_threshold_test(threshold + rng.standard_normal(n), threshold), draws)


def gate(converged_fraction: float, premise_ok: bool | None, min_attainable_p: float,
         alpha: float = ALPHA) -> str | None:
    """The verdict a claim gets before its p-value is read, or None if it may be tested."""
    if not converged_fraction >= CONVERGED_NEEDED:  # NaN (not measured) fails too
        return "not converged"
    if premise_ok is False:
        return "premise failed"
    if not min_attainable_p < alpha:
        return "underpowered"
    return None


def decide(p_adjusted: float, p_opposite_adjusted: float, null_rate_value: float, alpha: float = ALPHA) -> str:
    if p_adjusted < alpha and null_rate_value <= NULL_RATE_BOUND:
        return "supported"
    if p_opposite_adjusted < alpha:
        return "contradicted"
    return "inconclusive"


def adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment over one family (NaN stays NaN and is not counted)."""
    return holm(p_values)


def homogeneity_test(values: Sequence[float], errors: Sequence[float], relative_floor: float = 0.0) -> TestResult:
    """Cochran's Q test that measurements differ by more than their errors explain (claimed direction:
    not one common level).

    For quantities that are one deterministic computation each (e.g. the permutation-point losses of
    one toy teacher's neuron pairs) nothing can be permuted: the only randomness is each measurement's
    own error. The null is one common level μ with independent Gaussian errors of known SD s_i, under
    which Q = Σ (v_i - v̄)² / s_i² (v̄ the inverse-variance mean) is exactly χ² with n - 1 degrees of
    freedom at any n. s_i = max(errors_i, relative_floor · max|v|): the floor states a resolution below
    which differences do not count. The opposite direction (lower tail) is "the values agree better than
    their errors": one level at that resolution. Q is unbounded, so the attainable p is 0 for n >= 2.
    """
    values, errors = np.asarray(values, float), np.asarray(errors, float)
    if values.shape != errors.shape:
        raise ValueError(f"one error per value: {values.shape} vs {errors.shape}")
    keep = np.isfinite(values) & np.isfinite(errors)
    values, errors = values[keep], errors[keep]
    name = "Cochran's Q (chi-squared, n - 1 df, known Gaussian errors), one-sided (levels differ)"
    if len(values) < 2:
        return TestResult(name, float("nan"), float("nan"), float("nan"), "spread/error", len(values),
                          float("nan"), 1.0)
    sd = np.maximum(errors, relative_floor * float(np.max(np.abs(values))))
    if not np.all(sd > 0):
        raise ValueError("every value needs a positive error (or a positive relative_floor and a nonzero value)")
    weights = 1 / sd ** 2
    mean = float(weights @ values / weights.sum())
    q = float(weights @ (values - mean) ** 2)
    df = len(values) - 1
    return TestResult(name, q, float(scipy_stats().chi2.sf(q, df)), math.sqrt(q / df), "spread/error", len(values),
                      float(scipy_stats().chi2.cdf(q, df)), 0.0)


def homogeneity_null_rate(errors: Sequence[float], level: float = 0.0, relative_floor: float = 0.0,
                          draws: int = NULL_DRAWS) -> float:
    """Size of :func:`homogeneity_test`: one common ``level``, each value with an independent Gaussian
    error of SD max(errors_i, relative_floor · |level|), the floor recomputed by the test from the draws."""
    errors = np.asarray(errors, float)
    sd = np.maximum(errors, relative_floor * abs(level))
    return null_rate(lambda rng: homogeneity_test(level + sd * rng.standard_normal(len(sd)), errors,
                                                  relative_floor), draws)
