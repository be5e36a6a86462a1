"""The wrn_robustness topology stage on a hand-built paths.json whose 1-saddle barcodes are known by hand
(barcodes paper, Algorithm 2 and Appendix I): both regimes' complexes, the per-triangle Appendix I bars and the
index-1 TO-score."""

import json
import math
from itertools import combinations

import pytest
from tiny import tiny_params
from conftest import resolve_tiny

from benchmarks import wrn_robustness as wr
from losstopo.io import save_json

INF = math.inf
LOSSES = [0.0, 0.0, 0.0, 0.0]
# The square 0-1-2-3 with diagonal 0-2 (test_higher_barcodes_two_triangles_on_a_square), plus the pair (1, 3),
# which enters last, at 10.
CURVE_MAX = {(0, 1): 1.0, (0, 2): 4.5, (0, 3): 5.0, (1, 2): 2.0, (1, 3): 10.0, (2, 3): 3.0}
TRIPLES = list(combinations(range(4), 3))  # (0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)
# sides_fixed: the sides are the curves; the triangles on (1, 3) are lower than their sides.
SIDES_FIXED_MAX = [7.0, 0.5, 6.0, 0.5]
# vertices_fixed: each triangle's own sides (i, j), (j, k), (i, k), twelve distinct values, none of them a curve's.
OWN_SIDE_MAX = [(1.0, 2.0, 4.0), (1.5, 9.0, 5.5), (4.2, 3.0, 5.2), (2.5, 3.5, 8.0)]
VERTICES_FIXED_MAX = [7.5, 3.0, 6.5, 8.5]


def _paths_record() -> dict:
    sides_of_curves = [[CURVE_MAX[(i, j)], CURVE_MAX[(j, k)], CURVE_MAX[(i, k)]] for i, j, k in TRIPLES]
    return {"model": "lenet", "dataset": "fashion_mnist", "data_source": "hand-built", "data_kind": "synthetic",
            "minima_losses": LOSSES, "pairs": list(CURVE_MAX), "curve_max": list(CURVE_MAX.values()),
            "triples": TRIPLES,
            "triangles": {"sides_fixed": {"max": SIDES_FIXED_MAX, "side_max": sides_of_curves},
                          "vertices_fixed": {"max": VERTICES_FIXED_MAX, "side_max": OWN_SIDE_MAX}}}


@pytest.fixture
def saddles(tmp_path, monkeypatch) -> dict:
    """The topology stage's 1-saddle results per regime for the hand-built record (study lenet)."""
    monkeypatch.setenv("LOSSTOPO_TRACKING", "off")
    raw = tiny_params("wrn_robustness")
    raw["wrn_robustness"]["studies"] = ["lenet"]
    params = resolve_tiny(raw, tmp_path)
    root = tmp_path / "artifacts"
    save_json(_paths_record(), root / "wrn_robustness/paths/lenet/paths.json")
    save_json({"wall_s": 0.0}, root / "wrn_robustness/paths/stage.json")  # a finished paths stage (no file hashes)
    wr.run_topology(params.experiment("wrn_robustness"), params, root)
    return json.loads((root / "wrn_robustness/topology/lenet/topology.json").read_text())["saddles"]


def _bars(bars) -> list:
    return [None if b is None else tuple(b) for b in bars]


def test_sides_fixed_one_bars_of_the_shared_curves_complex(saddles):
    s = saddles["sides_fixed"]
    # Curves enter at 1 (01), 2 (12), 3 (23): a tree, so the 0-bars die at 1, 2, 3. 02 at 4.5 closes 0-1-2 and 03
    # at 5 closes 0-2-3; triangle 023 (6) kills the younger cycle (born 5), triangle 012 (7) the one born at 4.5.
    # 13 at 10 closes a cycle that triangles 013 and 123, lower than their sides, fill at 10 (zero length, dropped).
    assert sorted(map(tuple, s["bars_0"])) == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, INF)]
    assert _bars(s["bars_1"]) == [(4.5, 7.0), (5.0, 6.0)]
    assert s["to_score_1"] == pytest.approx(1.25)  # bottleneck to the empty barcode: max (d - b) / 2 = 2.5 / 2
    # Appendix I per triangle: from the highest of its sides to its maximum, None when it is not above them.
    assert _bars(s["appendix_i_bars"]) == [(4.5, 7.0), None, (5.0, 6.0), None]
    assert _bars(s["own_side_bars"]) == [(4.5, 7.0), None, (5.0, 6.0), None]  # its own sides are the curves


def test_vertices_fixed_one_bars_of_the_own_sides_complex(saddles):
    s = saddles["vertices_fixed"]
    # Every own side joins its two minima when it enters (Kruskal over the twelve sides): 1.0 (01), 2.0 (12) and
    # 3.0 (23) connect the minima; each of the nine later sides closes a cycle. A triangle's hexagon of own sides
    # is filled at max(its maximum, its sides), killing the cycle its last side closed: 012 (4.0 -> 7.5),
    # 023 (5.2 -> 6.5), 123 (8.0 -> 8.5); 013 is below its sides and fills 9.0 at 9.0. The four disks, glued at
    # the minima only, retract to tripods: a graph of 4 + 4 vertices and 12 edges, with 12 - 8 + 1 = 5 independent
    # cycles that nothing fills, those born at 1.5, 2.5, 3.5, 4.2 and 5.5.
    assert sorted(map(tuple, s["bars_0"])) == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, INF)]
    assert _bars(s["bars_1"]) == [(1.5, INF), (2.5, INF), (3.5, INF), (4.0, 7.5), (4.2, INF), (5.2, 6.5),
                                  (5.5, INF), (8.0, 8.5)]
    assert s["to_score_1"] == INF  # an essential bar is at infinite distance from the empty barcode
    # Appendix I on the shared curves (highest curve 4.5, 10, 5, 10) against on the triangle's own sides.
    assert _bars(s["appendix_i_bars"]) == [(4.5, 7.5), None, (5.0, 6.5), None]
    assert _bars(s["own_side_bars"]) == [(4.0, 7.5), None, (5.2, 6.5), (8.0, 8.5)]
