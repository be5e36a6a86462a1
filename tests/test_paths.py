import itertools

import numpy as np
import pytest
import torch

from analytic import WELL_CENTRES, descend_to_minima, grid_barcode, wells_1d, wells_2d
from losstopo.paths import (dense_positions, interpolate_polyline, optimize_path, optimize_paths,
                            orthogonal_direction, straight_path)
from losstopo.topology import barcode_of_minima


def test_straight_path_is_equally_spaced_with_exact_endpoints():
    a, b = torch.zeros(3), torch.tensor([3.0, 0.0, 6.0])
    points = straight_path(a, b, 4)
    assert torch.equal(points[0], a) and torch.equal(points[-1], b)
    assert torch.allclose(points[1], torch.tensor([1.0, 0.0, 2.0]))


def test_orthogonal_direction_removes_the_tangent_on_a_straight_path():
    points = straight_path(torch.zeros(1, 2), torch.tensor([[4.0, 0.0]]), 5)
    grads = torch.tensor([[[1.0, 2.0], [-3.0, 0.5], [0.0, -1.0]]])
    # On a straight x-axis path both neighbour directions are e_x: only the y part survives.
    assert torch.allclose(orthogonal_direction(points, grads), grads * torch.tensor([0.0, 1.0]))


def test_interpolation_hits_points_and_midpoints():
    points = torch.tensor([[0.0], [2.0], [6.0]])
    assert interpolate_polyline(points, np.array([0, 0.5, 1, 1.25, 2])).flatten().tolist() == [0, 1, 2, 3, 6]
    assert dense_positions(3, (0.5,)).tolist() == [0, 0.5, 1, 1.5, 2]


def test_endpoints_never_move_and_batched_equals_single():
    a, b = torch.tensor([-2.0, 0.0], dtype=torch.float64), torch.tensor([2.0, 0.2], dtype=torch.float64)
    single = optimize_path(wells_2d, a, b, n_points=9, lr=0.05, steps=50)
    both = optimize_paths(wells_2d, torch.stack([a, b]), torch.stack([b, a]), n_points=9, lr=0.05, steps=50)
    assert torch.equal(single.points[0], a) and torch.equal(single.points[-1], b)
    assert torch.allclose(both[0].points, single.points)
    assert both[0].max_loss == pytest.approx(single.max_loss)


def test_optimisation_lowers_the_path_maximum():
    a, b = descend_to_minima(wells_2d, WELL_CENTRES[:2])
    straight = optimize_path(wells_2d, a, b, n_points=19, steps=0)
    optimised = optimize_path(wells_2d, a, b, n_points=19, lr=0.05, steps=300)
    assert optimised.max_loss < straight.max_loss - 0.05


def _barcode_from_paths(fn, minima, **options):
    losses = fn(torch.stack(minima)).tolist()
    path_max = np.full((len(minima),) * 2, np.nan)
    pairs = list(itertools.combinations(range(len(minima)), 2))
    results = optimize_paths(fn, torch.stack([minima[i] for i, _ in pairs]),
                             torch.stack([minima[j] for _, j in pairs]), **options)
    for (i, j), result in zip(pairs, results):
        path_max[i, j] = path_max[j, i] = result.max_loss
    return losses, path_max


def _finite_deaths(bars):
    return sorted(d for _, d in bars if np.isfinite(d))


def test_1d_barcode_matches_exact_sublevel_persistence():
    # In 1-D the gradient is tangent to every path, so the path is the interval itself.
    minima = descend_to_minima(wells_1d, [torch.tensor([x]) for x in (-2.0, 0.1, 2.2)])
    losses, path_max = _barcode_from_paths(wells_1d, minima, n_points=201, lr=0.01, steps=20)
    reference, value_range = grid_barcode(wells_1d, [-4.0], [4.0], 20001)
    expected = sorted(d for _, d in reference if np.isfinite(d))
    assert len(expected) == 2
    for method in ("paper", "persistence"):
        got = _finite_deaths(barcode_of_minima(losses, path_max, method))
        assert np.allclose(got, expected, atol=0.02 * value_range)


def test_2d_optimised_paths_recover_exact_barcode_within_2_percent():
    minima = descend_to_minima(wells_2d, WELL_CENTRES)
    assert len({tuple(m.round(decimals=3).tolist()) for m in minima}) == 3
    losses, path_max = _barcode_from_paths(wells_2d, minima, n_points=41, lr=0.05, steps=600)
    reference, value_range = grid_barcode(wells_2d, [-3.5, -3.5], [3.5, 3.5], 701)
    births = sorted(b for b, d in reference if np.isfinite(d))
    expected = sorted(d for _, d in reference if np.isfinite(d))
    assert len(expected) == 2, reference  # the reference itself sees exactly three minima
    tolerance = 0.02 * value_range
    bars = barcode_of_minima(losses, path_max, "persistence")
    assert np.allclose(sorted(b for b, d in bars if np.isfinite(d)), births, atol=1e-3)
    assert np.allclose(_finite_deaths(bars), expected, atol=tolerance)
    # Algorithm 1 sees only the direct path 1 -> 0, which must climb around the hill: too high.
    paper = barcode_of_minima(losses, path_max, "paper")
    assert paper[1][1] > bars[1][1] + tolerance
    # Unoptimised straight segments cross the hill itself.
    _, straight_max = _barcode_from_paths(wells_2d, minima, n_points=41, steps=0)
    assert straight_max[0, 1] > path_max[0, 1] + 0.3


from losstopo.paths import Refinement, distance_scores, evaluate_path, insert_points, loss_scores  # noqa: E402


def test_distance_criterion_inserts_midpoints_in_the_two_longest_segments():
    points = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    scores = distance_scores(points)  # mu = 10 / 4
    assert torch.allclose(scores, torch.tensor([0.4, 0.4, 3.2]))
    refined, segments = insert_points(points, scores, threshold=1.2)
    assert segments == [0, 2]
    assert refined.flatten().tolist() == [0.0, 0.5, 1.0, 2.0, 6.0, 10.0]


def test_no_insertion_below_threshold():
    # mu divides by |path| (not |path| - 1): an evenly spaced path scores n / (n - 1) everywhere.
    points = straight_path(torch.zeros(2), torch.ones(2), 19)
    assert torch.allclose(distance_scores(points), torch.full((18,), 19 / 18))
    refined, segments = insert_points(points, distance_scores(points), threshold=1.2)
    assert segments == [] and torch.equal(refined, points)
    assert insert_points(points[::4], distance_scores(points[::4]), threshold=1.2)[1]  # 5 points: 5/4 > T


def test_loss_criterion_finds_the_segment_crossing_the_hill():
    a, b = torch.tensor([-2.0, 0.0], dtype=torch.float64), torch.tensor([2.0, 0.2], dtype=torch.float64)
    points = straight_path(a, b, 4)  # the hill at (0, 0.3) lies inside the middle segment
    scores = loss_scores(wells_2d, points, (0.25, 0.5, 0.75))
    assert int(scores.argmax()) == 1 and scores.max() > 1.2
    refined, segments = insert_points(points, scores, 1.2)
    assert 1 in segments and len(refined) == 6
    # Insertion does not move the curve: the refined points are among the unrefined dense evaluation
    # (alpha = 1/2), so their maximum never exceeds it.
    unrefined = evaluate_path(wells_2d, points, alphas=(0.5,))
    assert wells_2d(refined).max().item() <= unrefined.max_loss + 1e-12


def test_refinement_keeps_endpoints_and_grows_only_the_paths_that_need_it():
    a = torch.tensor([[-2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.2], [-1.9, 0.0]], dtype=torch.float64)  # a long path and a very short one
    results = optimize_paths(wells_2d, a, b, n_points=7, lr=0.05, steps=30,
                             refinement=Refinement(every=10, criterion="loss", threshold=1.05))
    assert len(results[0].points) > 7 and len(results[1].points) == 7
    for result, start, end in zip(results, a, b):
        assert torch.equal(result.points[0], start) and torch.equal(result.points[-1], end)
    assert results[0].positions[-1] == len(results[0].points) - 1


def test_adaptive_maximum_finds_a_peak_between_the_fixed_probes():
    """A long segment whose narrow smooth peak (height 1 at x = 0.53) lies between the paper's alphas:
    the fixed probes see 0.7% of it, the adaptive estimate is within 0.1% of the true maximum."""
    def bump(thetas):
        return torch.exp(-((thetas[:, 0] - 0.53) ** 2) / 0.001)

    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.1, 0.0]], dtype=torch.float64)
    fixed = evaluate_path(bump, points, tolerance=None)
    assert fixed.max_loss < 0.01
    adaptive = evaluate_path(bump, points)
    assert adaptive.max_loss == pytest.approx(1.0, rel=1e-3)
    assert abs(adaptive.argmax_position - (1 + 0.43 / 0.9)) < 0.01
    assert len(adaptive.positions) > len(fixed.positions) and np.all(np.diff(adaptive.positions) > 0)


def test_checkpointed_maxima_are_those_of_shorter_runs_and_give_the_convergence_rule():
    """With a constant step the path after k steps is the k-step path: one run measures several budgets."""
    a, b = torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    options = dict(n_points=7, lr=0.05, momentum=0.5, clip_norm=1.0, alphas=(0.5,))
    long = optimize_paths(wells_2d, a, b, steps=50, checkpoints=[10, 40], **options)[0]
    short = optimize_paths(wells_2d, a, b, steps=10, **options)[0]
    assert set(long.max_at_steps) == {10, 40, 50}
    assert long.max_at_steps[10] == pytest.approx(short.max_loss, rel=1e-6)
    assert long.max_at_steps[50] == long.max_loss
    change = abs(long.max_loss - long.max_at_steps[40]) / abs(long.max_loss)
    assert long.relative_change() == pytest.approx(change)
    assert np.isnan(short.relative_change())  # 80% of 10 steps was not checkpointed
    assert np.isfinite(long.orthogonal_grad_norm) and long.orthogonal_grad_norm >= 0


from analytic import CAMEL_MINIMA, HIMMELBLAU_MINIMA, himmelblau, six_hump_camel  # noqa: E402
from losstopo.paths import PathsDiverged  # noqa: E402

# One set of options for every landscape: with normalised steps lr is a fraction of each path's spacing,
# so neither the loss's scale (Himmelblau's range is ~900, the wells' ~1.5) nor the distances matter.
NORMALIZED = dict(n_points=41, lr=0.1, steps=300, momentum=0.9, step_rule="normalized")
LANDSCAPES = {
    "himmelblau": (himmelblau, HIMMELBLAU_MINIMA, [-5.0, -5.0], [5.0, 5.0], 0.01),
    "six_hump_camel": (six_hump_camel, CAMEL_MINIMA, [-2.2, -1.3], [2.2, 1.3], 0.01),
    "wells": (wells_2d, WELL_CENTRES, [-3.5, -3.5], [3.5, 3.5], 0.05),
}


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_normalized_steps_recover_exact_barcodes_with_one_set_of_options(name):
    fn, starts, lows, highs, descent_lr = LANDSCAPES[name]
    minima = descend_to_minima(fn, starts, lr=descent_lr)
    losses, path_max = _barcode_from_paths(fn, minima, **NORMALIZED)
    reference, value_range = grid_barcode(fn, lows, highs, 1001)
    expected = sorted(d for _, d in reference if np.isfinite(d))
    got = _finite_deaths(barcode_of_minima(losses, path_max, "persistence"))
    assert len(got) == len(expected) == len(minima) - 1
    assert np.abs(np.subtract(got, expected)).max() < 1e-3 * value_range


def test_a_diverging_path_stops_with_an_error_naming_it():
    minima = descend_to_minima(himmelblau, HIMMELBLAU_MINIMA, lr=0.01)
    with pytest.raises(PathsDiverged) as error:  # plain steps of lr 0.02 with momentum blow up on Himmelblau
        optimize_paths(himmelblau, torch.stack(minima[:2]), torch.stack(minima[2:]), n_points=19, lr=0.02,
                       steps=200, momentum=0.9, clip_norm=None)
    assert error.value.paths and set(error.value.paths) <= {0, 1}


def test_segment_sampled_steps_recover_the_exact_barcode_of_the_wells():
    minima = descend_to_minima(wells_2d, WELL_CENTRES, lr=0.05)
    losses, path_max = _barcode_from_paths(wells_2d, minima, **NORMALIZED, sample="segments")
    reference, value_range = grid_barcode(wells_2d, [-3.5, -3.5], [3.5, 3.5], 1001)
    expected = sorted(d for _, d in reference if np.isfinite(d))
    got = _finite_deaths(barcode_of_minima(losses, path_max, "persistence"))
    assert np.abs(np.subtract(got, expected)).max() < 2e-3 * value_range


def test_segment_gradients_are_the_polyline_points_gradients_shared_by_the_segment_ends():
    from losstopo.paths import _FlatPaths, _segment_gradients

    points = torch.randn(5, 3, dtype=torch.float64)
    flat = _FlatPaths([points])
    half_square = lambda rows: 0.5 * (rows ** 2).sum(-1)  # noqa: E731  gradient at a probe = the probe
    losses, grads, counts = _segment_gradients(half_square, flat, torch.Generator().manual_seed(4), 8)
    a = torch.rand(4, 1, generator=torch.Generator().manual_seed(4)).double()
    probes = (1 - a) * points[:-1] + a * points[1:]
    assert counts == [4] and torch.allclose(losses, half_square(probes))
    expected = a[:-1] * probes[:-1] + (1 - a[1:]) * probes[1:]  # interior point i: end of segment i-1, start of i
    assert torch.allclose(grads, expected)


def test_path_convergence_with_an_absolute_resolution():
    from losstopo.paths import path_converged

    # a maximum of 3e-4 that the last 20% of steps moved by 10% (3e-5 nats), 5e-5 above its floor of 2.5e-4
    assert not path_converged(0.1, 3e-4, 2.5e-4, 0.01)  # relative rules alone: still moving, above the floor
    assert path_converged(0.1, 3e-4, 2.5e-4, 0.01, absolute=1e-4)  # moved by less than the resolution
    assert not path_converged(0.1, 3e-4, 2.5e-4, 0.01, absolute=1e-5)
    # a maximum far above its floor that moved by more than the resolution is not converged
    assert not path_converged(0.5, 1.0, 0.01, 0.01, absolute=1e-4)
    # within the resolution of its floor, though it still moved a lot
    assert path_converged(0.5, 2e-4, 1.5e-4, 0.01, absolute=1e-4)


def test_a_path_maximum_above_twice_its_straight_segment_or_not_finite_stops_the_stage():
    from losstopo.errors import TrainingDiverged
    from losstopo.paths import check_not_diverged

    check_not_diverged("v", [(0, 1), (0, 2)], [0.5, 3.9], [3.0, 2.0], "x.paths.lr")  # 3.9 <= 2 x 2.0
    with pytest.raises(TrainingDiverged, match=r"^v: the path between minima 0 and 2 diverged: its maximum 5e\+11 .*"
                                               r"above 2 x its straight segment's 2; lower x.paths.lr"):
        check_not_diverged("v", [(0, 1), (0, 2)], [0.5, 5e11], [3.0, 2.0], "x.paths.lr")
    with pytest.raises(TrainingDiverged, match="minima 0 and 1 diverged: its maximum nan"):
        check_not_diverged("v", [(0, 1)], [float("nan")], [3.0], "x.paths.lr")
