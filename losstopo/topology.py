"""Barcodes of minima and the TO-score (barcodes paper, sections 1.1 to 1.3).

Barcodes are plain data: a list of ``(birth, death)`` pairs, one per minimum, in the order
of the minima given, with ``death = inf`` for the global minimum.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Bar = tuple[float, float]


def barcode_of_minima(losses: Sequence[float], path_max: np.ndarray, method: str = "paper") -> list[Bar]:
    """One bar ``[L(p), h_p]`` per minimum.

    ``path_max[i, j]``: maximum loss along the optimised path between minima i and j (symmetric;
    NaN where no path was computed; the diagonal is ignored).

    ``method="paper"`` is Algorithm 1: ``h_p`` is the lowest maximum among the *direct* paths from
    p to a minimum of lower loss. ``method="persistence"`` is the exact 0-dimensional persistence
    of the graph (vertex filtration = loss, edge filtration = max(path maximum, endpoint losses)),
    computed with gudhi: ``h_p`` is then the lowest level at which p's sublevel component meets a
    lower minimum through any chain of paths, so it is never above Algorithm 1's value.
    Ties in loss are broken by index, the earlier minimum counting as lower.
    """
    losses = np.asarray(losses, dtype=float)
    path_max = np.asarray(path_max, dtype=float)
    n = len(losses)
    if path_max.shape != (n, n):
        raise ValueError(f"path_max must be ({n}, {n}) for {n} minima, got {path_max.shape}")
    if method == "paper":
        return _algorithm_1(losses, path_max)
    if method == "persistence":
        return _graph_persistence(losses, path_max)
    raise ValueError(f"unknown barcode method {method!r}; use 'paper' or 'persistence'")


def _lower_order(losses: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(len(losses)), losses))


def _algorithm_1(losses: np.ndarray, path_max: np.ndarray) -> list[Bar]:
    rank = np.empty(len(losses), dtype=int)
    rank[_lower_order(losses)] = np.arange(len(losses))
    bars = []
    for p in range(len(losses)):
        lower = [q for q in range(len(losses)) if rank[q] < rank[p] and not math.isnan(path_max[p, q])]
        h = min((path_max[p, q] for q in lower), default=math.inf)
        bars.append((float(losses[p]), float(h)))
    return bars


def _graph_persistence(losses: np.ndarray, path_max: np.ndarray) -> list[Bar]:
    """Elder-rule pairing read from gudhi's persistence pairs of the filtered 1-skeleton."""
    order = _lower_order(losses)
    # Index-ordered offsets far below any loss difference make gudhi break ties as we do;
    # reported values are the exact, un-offset ones.
    offset = np.empty(len(losses))
    offset[order] = np.spacing(np.abs(losses).max() + 1.0) * 4 * np.arange(len(losses))
    import gudhi  # on first use: compute-only machines lack it

    tree = gudhi.SimplexTree()
    for v in range(len(losses)):
        tree.insert([v], filtration=losses[v] + offset[v])
    edge_value = {}
    for i in range(len(losses)):
        for j in range(i + 1, len(losses)):
            value = np.fmin(path_max[i, j], path_max[j, i])
            if not math.isnan(value):
                # An edge never enters before its endpoints (gudhi would lower their filtration).
                edge_value[(i, j)] = max(value, losses[i], losses[j])
                tree.insert([i, j], filtration=max(edge_value[(i, j)], losses[i] + offset[i], losses[j] + offset[j]))
    tree.persistence(homology_coeff_field=2, min_persistence=-1)
    death = [math.inf] * len(losses)
    for birth_simplex, death_simplex in tree.persistence_pairs():
        if len(birth_simplex) == 1 and len(death_simplex) == 2:
            death[birth_simplex[0]] = edge_value[tuple(sorted(death_simplex))]
    return [(float(losses[v]), float(death[v])) for v in range(len(losses))]


def to_score(bars: Sequence[Bar]) -> float:
    """TO-score, eq. (3): bottleneck distance to the one-bar barcode ``[min loss, inf)``.

    The essential bars match each other at distance 0, so the closed form is
    ``max_p (h_p - L(p)) / 2`` over the finite bars; computed here with gudhi (``e=0``: exact).
    """
    bars = [(float(b), float(d)) for b, d in bars]
    finite_deaths = [b for b, d in bars if d == math.inf]
    if len(finite_deaths) != 1:
        raise ValueError(f"a barcode of minima has exactly one infinite bar, got {len(finite_deaths)}")
    global_min = min(b for b, _ in bars)
    import gudhi

    return float(gudhi.bottleneck_distance(np.array(bars), np.array([[global_min, math.inf]]), e=0))


def segment_lengths(bars: Sequence[Bar]) -> np.ndarray:
    """``h_p - L(p)`` per minimum (inf for the global minimum)."""
    return np.array([d - b for b, d in bars])


def higher_barcodes(vertex_losses: Sequence[float], edge_max: dict[tuple[int, int], float],
                    triangle_max: dict[tuple[int, int, int], float]) -> dict[int, list[Bar]]:
    """Algorithm 2: barcodes in dimensions 0 and 1 of the filtered complex of minima (their loss),
    optimised curves (their maximum) and optimised triangles (their maximum), computed with gudhi.

    A simplex enters no earlier than its faces (filtration = max of its own value and its faces'),
    so a triangle's 1-bar runs from the maximum of its sides to its own maximum (Appendix I).
    Bars of zero length are dropped; infinite deaths are ``inf``.
    """
    import gudhi  # on first use: compute-only machines lack it

    tree = gudhi.SimplexTree()
    values = {}
    for v, loss in enumerate(vertex_losses):
        values[(v,)] = float(loss)
    for (i, j), value in edge_max.items():
        key = tuple(sorted((i, j)))
        values[key] = max(float(value), values[(key[0],)], values[(key[1],)])
    for simplex, value in triangle_max.items():
        key = tuple(sorted(simplex))
        faces = [values[e] for e in ((key[0], key[1]), (key[1], key[2]), (key[0], key[2]))]
        values[key] = max(float(value), *faces)
    for key, value in sorted(values.items(), key=lambda kv: (len(kv[0]), kv[1])):
        tree.insert(list(key), filtration=value)
    tree.persistence(homology_coeff_field=2, min_persistence=0)
    return {dim: sorted((float(b), float(d)) for b, d in tree.persistence_intervals_in_dimension(dim))
            for dim in (0, 1)}


def own_sides_barcodes(vertex_losses: Sequence[float],
                       triangles: Sequence[tuple[tuple[int, int, int], Sequence[float], float]]) -> dict[int, list[Bar]]:
    """Algorithm 2 for triangles that trained their own sides (Fig. 16, vertices_fixed): each triangle
    ``((i, j, k), (max_ij, max_jk, max_ik), max)`` is bounded by its own three sides, not by the shared
    curves, so two triangles on the same pair of minima have two different edges there.

    A simplicial complex cannot hold two edges on one pair of vertices, so every own side gets a vertex
    of its own (its centre, entering at the side's maximum) and the hexagon of a triangle's boundary is
    filled by four triangles entering at the triangle's maximum: the boundary cycle of each triangle is
    then born at the maximum of its own sides and dies at its own maximum, as in Appendix I.
    """
    import gudhi  # on first use: compute-only machines lack it

    tree = gudhi.SimplexTree()
    losses = [float(v) for v in vertex_losses]
    for v, loss in enumerate(losses):
        tree.insert([v], filtration=loss)
    next_vertex = len(losses)
    for (i, j, k), side_max, triangle_max in triangles:
        centres = {}
        for (a, b), value in zip(((i, j), (j, k), (i, k)), side_max):
            level = max(float(value), losses[a], losses[b])
            centres[(a, b)] = (next_vertex, level)
            tree.insert([next_vertex], filtration=level)
            tree.insert([a, next_vertex], filtration=level)
            tree.insert([next_vertex, b], filtration=level)
            next_vertex += 1
        top = max(float(triangle_max), *(level for _, level in centres.values()))
        m_ij, m_jk, m_ik = (centres[e][0] for e in ((i, j), (j, k), (i, k)))
        for simplex in ([i, m_ij, m_ik], [j, m_ij, m_jk], [k, m_jk, m_ik], [m_ij, m_jk, m_ik]):
            tree.insert(simplex, filtration=top)
    tree.make_filtration_non_decreasing()
    tree.persistence(homology_coeff_field=2, min_persistence=0)
    return {dim: sorted((float(b), float(d)) for b, d in tree.persistence_intervals_in_dimension(dim) if d > b)
            for dim in (0, 1)}


def subset_robustness(losses: Sequence[float], path_max: np.ndarray, sizes: Sequence[int],
                      method: str = "paper") -> dict[int, dict[int, list[float]]]:
    """Fig. 7: for every subset of the minima of each size, the barcode of that subset alone.

    Returns ``{size: {minimum: [h_p over the subsets of that size containing it, where finite]}}``;
    the mean and spread of each list say how robust the bar of that minimum is to the choice and
    number of the other minima.
    """
    from itertools import combinations

    losses = np.asarray(losses, dtype=float)
    out: dict[int, dict[int, list[float]]] = {}
    for size in sizes:
        per_minimum: dict[int, list[float]] = {p: [] for p in range(len(losses))}
        for subset in combinations(range(len(losses)), size):
            idx = list(subset)
            bars = barcode_of_minima(losses[idx], path_max[np.ix_(idx, idx)], method)
            for p, (_, death) in zip(idx, bars):
                if math.isfinite(death):
                    per_minimum[p].append(death)
        out[size] = per_minimum
    return out
