"""Robustness of the barcode of minima to the choice and number of minima (barcodes paper, section 4, Fig. 7),
and a test of it that the construction alone cannot pass.

h_p over a subset of minima is a minimum over the lower minima in it, so its spread shrinks with the subset size
whatever the landscape: "the spread shrinks" holds by construction. :func:`robustness_test` compares the observed
spread with that of the same barriers shuffled over the pairs instead.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from typing import Sequence

import numpy as np

from losstopo.evidence import null_rate
from losstopo.stats import TestResult
from losstopo.topology import barcode_of_minima, subset_robustness

ROBUSTNESS_DRAWS = 199  # relabellings of the curve maxima per robustness test
ROBUSTNESS_NULL_DRAWS = 400  # null landscapes for the test's measured size (as evidence.NULL_DRAWS)


def spread(values) -> dict:
    """Mean, population std (over the complete enumeration of subsets) and CV of one list of h_p."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return {"n": 0, "mean": None, "std": None, "cv": None}
    mean, std = float(values.mean()), float(values.std())
    return {"n": int(len(values)), "mean": mean, "std": std, "cv": std / abs(mean) if mean else None}


def _sizes(sizes_requested: Sequence[int], n: int) -> list[int]:
    return sorted({s for s in sizes_requested if 2 <= s <= n})


def _mean_cv(pooled: Sequence[dict]) -> float | None:
    """The robustness statistic: the mean over minima of the CV of their h_p pooled over all subsets."""
    cvs = [row["cv"] for row in pooled if row["n"] >= 2 and row["cv"] is not None]
    return float(np.mean(cvs)) if cvs else None


def _pooled(table: dict, sizes: Sequence[int], n: int) -> list[dict]:
    return [spread([h for s in sizes for h in table[s][p]]) for p in range(n)]


def mean_cv(losses: Sequence[float], matrix: np.ndarray, sizes_requested: Sequence[int]) -> float | None:
    """``robustness_summary(...)["mean_cv"]`` without the rest of the summary."""
    value = float(mean_cvs(losses, np.asarray(matrix, float)[None], sizes_requested)[0])
    return None if math.isnan(value) else value


def mean_cvs(losses: Sequence[float], matrices: np.ndarray, sizes_requested: Sequence[int]) -> np.ndarray:
    """:func:`mean_cv` of each of ``matrices`` (shape ``(draws, n, n)``) at once, NaN where it has none: the
    robustness test's null draws share the losses, hence every subset's order of its minima."""
    losses = np.asarray(losses, float)
    n = len(losses)
    rank = np.empty(n, dtype=int)
    rank[np.lexsort((np.arange(n), losses))] = np.arange(n)
    owners, lower = _subset_bars(tuple(rank.tolist()), tuple(_sizes(sizes_requested, n)))
    rows = matrices[:, owners, :]  # (draws, bars, n): each bar's row of path maxima
    heights = np.where(lower & ~np.isnan(rows), rows, np.inf).min(axis=-1)  # Algorithm 1's h_p on each subset
    finite = np.isfinite(heights)
    member = owners[:, None] == np.arange(n)  # (bars, n): the minimum each bar belongs to
    count = finite.astype(float) @ member
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, heights, 0.0) @ member / count
        deviation = np.where(finite, heights - mean[:, owners], 0.0)
        cv = np.sqrt(deviation ** 2 @ member / count) / np.abs(mean)
    cv[(count < 2) | (mean == 0)] = np.nan
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any CV: NaN
        return np.nanmean(cv, axis=1)


@functools.cache
def _subset_bars(rank: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every bar that can be finite in the subsets of the given sizes: its minimum, and the mask of the subset's
    minima below it (ranked by loss, ties by index, as Algorithm 1)."""
    n = len(rank)
    owners, lower = [], []
    for size in sizes:
        for subset in itertools.combinations(range(n), size):
            for p in subset:
                below = [q for q in subset if rank[q] < rank[p]]
                if below:
                    owners.append(p)
                    lower.append(np.isin(np.arange(n), below))
    return np.array(owners, dtype=int), np.array(lower, dtype=bool).reshape(-1, n)


def robustness_summary(losses: Sequence[float], matrix: np.ndarray, sizes_requested: Sequence[int],
                       fixed_requested: int) -> dict:
    """Fig. 7 from :func:`losstopo.topology.subset_robustness`: per minimum over all subsets (a), the fixed minimum
    per size (b), and the CV per (minimum, size) that the robustness claim tests."""
    n = len(losses)
    sizes = _sizes(sizes_requested, n)
    table = subset_robustness(losses, matrix, sizes)
    full = barcode_of_minima(losses, matrix, "paper")
    global_minimum = int(np.lexsort((np.arange(n), losses))[0])
    fixed = min(max(fixed_requested, 0), n - 1)
    per_size = [{"size": s, "minima": [{"minimum": p, **spread(table[s][p])} for p in range(n)]} for s in sizes]
    points = [(s, p, row["cv"]) for s, entry in zip(sizes, per_size) for p, row in enumerate(entry["minima"])
              if s < n and row["n"] >= 2 and row["cv"] is not None]
    pooled = [{"minimum": p, "loss": float(losses[p]), "full_height": full[p][1], **row}
              for p, row in enumerate(_pooled(table, sizes, n))]
    return {
        "sizes_requested": list(sizes_requested), "sizes": sizes, "n_minima": n,
        "values": [{"size": s, "minima": [table[s][p] for p in range(n)]} for s in sizes],
        "per_minimum": pooled, "per_size": per_size, "global_minimum": global_minimum,
        "fixed_minimum": {"index": fixed, "requested": fixed_requested, "is_global_minimum": fixed == global_minimum,
                          "by_size": [{"size": s, **spread(table[s][fixed])} for s in sizes]},
        "mean_cv": _mean_cv(pooled),
        "mean_cv_by_size": [{"size": s, "mean_cv": float(np.mean(v)) if v else None}
                            for s in sizes for v in [[c for s2, _, c in points if s2 == s]]],
        "trend_points": [{"size": s, "minimum": p, "cv": c} for s, p, c in points],
    }


def shuffled_barriers(losses, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same barriers (a path's maximum above its higher end point's loss), reassigned to the pairs at random
    and put back on the new pair's higher end point: every shuffled maximum still lies above both its minima, as
    every real one does (shuffling the maxima themselves broke that, and the test rejected 7% of null landscapes)."""
    n = len(matrix)
    upper = np.triu_indices(n, 1)
    floors = np.maximum.outer(np.asarray(losses, float), np.asarray(losses, float))
    out = np.full_like(matrix, np.nan)
    out[upper] = floors[upper] + rng.permutation(matrix[upper] - floors[upper])
    out.T[upper] = out[upper]
    return out


def robustness_test(losses, matrix: np.ndarray, sizes, draws: int = ROBUSTNESS_DRAWS, seed: int = 0) -> TestResult:
    """Is the barcode more stable over subsets of minima than the construction alone makes it?

    h_p over a subset is a minimum over the lower minima in it, so its spread shrinks with the subset
    size whatever the landscape. The null here is the construction itself: the observed barriers reassigned to
    the pairs at random (:func:`shuffled_barriers`), under which they are exchangeable and the test exact.
    Statistic: the mean CV of h_p over all subsets; one-sided Monte Carlo p that the observed mean CV is this
    small under the null.
    """
    rng = np.random.default_rng(seed)
    observed = mean_cv(losses, matrix, sizes)
    name = "Monte Carlo test of the mean CV of h_p over subsets vs barriers shuffled over pairs (smaller)"
    if observed is None:
        return TestResult(name, float("nan"), float("nan"), float("nan"), "mean CV - null median", 0,
                          float("nan"), 1 / (1 + draws))
    null = mean_cvs(losses, np.stack([shuffled_barriers(losses, matrix, rng) for _ in range(draws)]), sizes)
    null = null[np.isfinite(null)]
    p = float((1 + np.sum(null <= observed + 1e-12)) / (1 + len(null)))
    p_other = float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
    return TestResult(name, float(observed), p, float(observed - np.median(null)), "mean CV - null median",
                      len(losses), p_other, 1 / (1 + len(null)))


@functools.cache
def robustness_null_rate(n_minima: int, sizes: tuple[int, ...], draws: int = ROBUSTNESS_NULL_DRAWS) -> float:
    """Size of :func:`robustness_test` on landscapes without structure: minima losses and curve maxima
    (above both end points) drawn at random, 99 relabellings per test."""
    def one(rng: np.random.Generator) -> TestResult:
        losses = rng.random(n_minima)
        matrix = np.maximum.outer(losses, losses) + rng.exponential(1.0, (n_minima, n_minima))
        matrix = np.triu(matrix, 1) + np.triu(matrix, 1).T
        np.fill_diagonal(matrix, np.nan)
        return robustness_test(losses, matrix, sizes, draws=99, seed=int(rng.integers(2**31)))
    return null_rate(one, draws)
