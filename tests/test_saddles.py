"""losstopo.saddles: the filtration of the curves, Appendix I's bar of one triangle and the index-1 TO-score,
on hand-computed cases."""

import pytest

from losstopo.saddles import appendix_i_bar, edge_filtration, saddle_to_score
from losstopo.topology import higher_barcodes

LOSSES = [0.0, 1.0, 2.0]
# Curves 0-1, 1-2, 0-2 with maxima 0.5 (below its end point 1), 3 and 1.5 (below its end point 2).
EDGES = edge_filtration(LOSSES, [(0, 1), (1, 2), (0, 2)], [0.5, 3.0, 1.5])


def test_a_curve_enters_the_complex_at_its_maximum_never_below_its_end_points():
    assert EDGES == {(0, 1): 1.0, (1, 2): 3.0, (0, 2): 2.0}


def test_appendix_i_bar_runs_from_the_highest_side_to_the_triangle_maximum():
    assert appendix_i_bar((0, 1, 2), EDGES, 4.0) == (3.0, 4.0)
    assert appendix_i_bar((0, 1, 2), EDGES, 3.0) is None  # enters with its last side: no cycle
    assert appendix_i_bar((0, 1, 2), EDGES, 2.5) is None
    # one triangle: the complex's 1-barcode (Algorithm 2) is that segment
    assert higher_barcodes(LOSSES, EDGES, {(0, 1, 2): 4.0})[1] == [(3.0, 4.0)]


def test_index_1_to_score_is_half_the_longest_bar():
    assert saddle_to_score([]) == 0.0
    assert saddle_to_score([(3.0, 4.0)]) == pytest.approx(0.5)
    assert saddle_to_score([(1.0, 2.0), (3.0, 6.0)]) == pytest.approx(1.5)
