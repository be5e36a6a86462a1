import math

import numpy as np
import pytest

from losstopo.topology import barcode_of_minima, segment_lengths, to_score

INF = math.inf


def test_algorithm_1_takes_lowest_direct_path_to_a_lower_minimum():
    losses = [0.0, 1.0, 2.0]
    path_max = np.array([[0, 5, 3], [5, 0, 4], [3, 4, 0.0]])
    # minimum 1 reaches only minimum 0 below it: h = 5; minimum 2 takes min(3, 4) = 3.
    assert barcode_of_minima(losses, path_max, "paper") == [(0.0, INF), (1.0, 5.0), (2.0, 3.0)]


def test_persistence_agrees_with_algorithm_1_when_direct_paths_are_best():
    losses = [0.3, 0.1, 0.2, 0.5]
    path_max = np.array([[0, 1, 2, 3], [1, 0, 1.5, 2], [2, 1.5, 0, 2.5], [3, 2, 2.5, 0.0]])
    paper = barcode_of_minima(losses, path_max, "paper")
    assert paper == barcode_of_minima(losses, path_max, "persistence")
    assert paper == [(0.3, 1.0), (0.1, INF), (0.2, 1.5), (0.5, 2.0)]


def test_persistence_chains_paths_where_algorithm_1_cannot():
    # 1 -> 2 at 2.5 then 2 -> 0 at 3: minimum 1 reaches the global minimum at 3 < 5 (its direct path).
    losses = [0.0, 1.0, 2.0]
    path_max = np.array([[0, 5, 3], [5, 0, 2.5], [3, 2.5, 0.0]])
    assert barcode_of_minima(losses, path_max, "paper") == [(0.0, INF), (1.0, 5.0), (2.0, 2.5)]
    assert barcode_of_minima(losses, path_max, "persistence") == [(0.0, INF), (1.0, 3.0), (2.0, 2.5)]


def test_equal_losses_break_ties_by_index():
    losses = [0.5, 0.5]
    path_max = np.array([[0, 0.9], [0.9, 0]])
    for method in ("paper", "persistence"):
        assert barcode_of_minima(losses, path_max, method) == [(0.5, INF), (0.5, 0.9)]


def test_missing_paths_leave_bars_unbounded():
    losses = [0.0, 1.0]
    path_max = np.full((2, 2), np.nan)
    assert barcode_of_minima(losses, path_max, "paper")[1] == (1.0, INF)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        barcode_of_minima([0, 1, 2], np.zeros((2, 2)))


@pytest.mark.parametrize("seed", range(5))
def test_to_score_equals_closed_form(seed):
    rng = np.random.default_rng(seed)
    losses = rng.uniform(0, 1, 7)
    upper = np.triu(rng.uniform(1, 3, (7, 7)), 1)
    bars = barcode_of_minima(losses, upper + upper.T, "paper")
    finite = [d - b for b, d in bars if d != INF]
    assert to_score(bars) == pytest.approx(max(finite) / 2, abs=1e-12)


def test_to_score_of_single_bar_is_zero_and_hand_case():
    assert to_score([(0.2, INF)]) == 0.0
    assert to_score([(0.0, INF), (1.0, 1.5), (2.0, 4.0)]) == pytest.approx(1.0)  # (4 - 2) / 2
    assert segment_lengths([(0.0, INF), (1.0, 1.5)])[1] == pytest.approx(0.5)


def test_to_score_rejects_barcode_without_single_essential_bar():
    with pytest.raises(ValueError, match="one infinite bar"):
        to_score([(0.0, 1.0)])


@pytest.mark.parametrize("seed", range(8))
def test_persistence_equals_minimax_paths_on_random_graphs(seed):
    # Independent reference: h_p = min over lower minima q of the minimax path value p -> q
    # (Floyd-Warshall on max-plus), edges entering no earlier than their endpoints.
    rng = np.random.default_rng(seed)
    n = 7
    losses = rng.uniform(0, 1, n)
    upper = np.triu(rng.uniform(0.5, 3, (n, n)), 1)
    upper[rng.uniform(size=(n, n)) < 0.3] = np.nan  # some pairs have no path
    path_max = np.where(np.isnan(upper), np.nan, upper + upper.T)
    path_max = np.fmax(path_max, path_max.T)
    graph = np.where(np.isnan(path_max), np.inf, np.maximum(path_max, np.maximum.outer(losses, losses)))
    for k in range(n):
        graph = np.minimum(graph, np.maximum(graph[:, [k]], graph[[k], :]))
    expected = [min([graph[p, q] for q in range(n) if losses[q] < losses[p]], default=INF) for p in range(n)]
    got = [d for _, d in barcode_of_minima(losses, path_max, "persistence")]
    assert np.allclose(got, expected)


def test_best_paths_take_the_lower_maximum_per_pair_and_say_which():
    from losstopo.topology_stage import best_paths
    from losstopo.errors import ConfigError

    pairs = [[0, 1], [0, 2], [1, 2]]
    losses = [0.1, 0.2, 0.9]  # pair 1-2's floor is 0.9: a path at 0.9 cannot go lower
    alg3 = {"variant": "v", "pairs": pairs, "minima_losses": losses, "max_loss": [0.5, 0.2, 0.9], "converged": [False, True, True],
            "relative_change": [0.0, 0.5, 0.001], "orthogonal_grad_norm": [1.0, 2.0, 3.0]}
    curve = {"variant": "v", "pairs": pairs, "minima_losses": losses, "max_loss": [0.4, 0.3, 0.9],
             "converged": [True, True, False],
             "relative_change": [0.2, 0.0, 0.0], "orthogonal_grad_norm": [float("nan")] * 3}
    best = best_paths({"alg3": alg3, "polychain": curve})
    assert best["max_loss"] == [0.4, 0.2, 0.9]
    assert best["method"] == ["polychain", "alg3", "alg3"]  # a tie goes to the first method listed
    # converged: every method's path converged, or the chosen one converged at its floor (pair 1-2)
    assert best["converged"] == [False, True, True]
    assert best_paths({"alg3": {**alg3, "max_loss": [0.5, 0.2, 0.95]}, "polychain": curve})["converged"][2] is False
    assert best["relative_change"] == [0.2, 0.5, 0.001]
    assert best["max_loss_by_method"] == {"alg3": alg3["max_loss"], "polychain": curve["max_loss"]}
    assert best_paths({"alg3": alg3})["max_loss"] == alg3["max_loss"]
    with pytest.raises(ConfigError, match="different pairs"):
        best_paths({"alg3": alg3, "polychain": {**curve, "pairs": pairs[::-1]}})


def test_the_path_method_comparison_appears_only_when_both_methods_ran(tmp_path):
    from benchmarks import path_methods
    from losstopo.report import Section

    both = {"path_max_by_method": {"alg3": [0.5, 0.2], "polychain": [0.4, 0.3]},
            "to_score_by_method": {"alg3": 0.2, "polychain": 0.15}, "to_score": 0.1,
            "path_method": ["polychain", "alg3"],
            "paths_converged_by_method": {"alg3": [True, True], "polychain": [False, True]}}
    one = {"path_max_by_method": {"alg3": [0.5, 0.2]}}
    section = Section("t")
    path_methods.add_if_compared(section, "cnn_channels", ["v"], [one], tmp_path, "cifar10", root=tmp_path)
    assert not section.blocks
    path_methods.add_if_compared(section, "cnn_channels", ["v"], [both], tmp_path, "cifar10", root=tmp_path)
    table = section.blocks[1]
    assert "| v | 0.3500 | 0.3500 | 0.2000 | 0.1500 | 0.1000 | alg3 1/2, polychain 1/2 | 2/2 | 1/2 |" in table
    assert (tmp_path / "cnn_channels_path_methods_cifar10.png").is_file()
    assert "polychain 1/2" in path_methods.words([both]) and path_methods.words([one]) == ""
