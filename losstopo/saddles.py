"""The 1-saddle side of the barcodes (barcodes paper, section 1.4, Algorithm 2, Appendix I): where a curve enters
the complex of minima, curves and triangles, the 1-bar of a single triangle, and the index-1 TO-score.

The complex's barcodes themselves are :func:`losstopo.topology.higher_barcodes` (triangles on shared curves) and
:func:`losstopo.topology.own_sides_barcodes` (triangles that trained their own sides).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from losstopo.topology import Bar


def edge_filtration(losses: Sequence[float], pairs: Sequence[tuple[int, int]],
                    maxima: Sequence[float]) -> dict[tuple[int, int], float]:
    """Filtration value of each curve (i, j) in the complex: its maximum, never below its end points' losses."""
    return {(i, j): max(float(m), losses[i], losses[j]) for (i, j), m in zip(pairs, maxima)}


def appendix_i_bar(triple, edges: dict[tuple[int, int], float], triangle_max: float) -> Bar | None:
    """Appendix I: a triangle's 1-bar runs from the maximum over its sides to its own maximum (None if empty)."""
    i, j, k = triple
    birth = max(edges[(i, j)], edges[(j, k)], edges[(i, k)])
    return (birth, float(triangle_max)) if triangle_max > birth else None


def saddle_to_score(bars: Sequence[Bar]) -> float:
    """Index-1 TO-score (section 1.4): bottleneck distance to the empty barcode of the ideal function."""
    points = np.array([(b, d) for b, d in bars], dtype=float).reshape(-1, 2)
    import gudhi  # on first use: compute-only machines lack it

    return float(gudhi.bottleneck_distance(points, np.empty((0, 2)), e=0)) if len(points) else 0.0
