import math

import numpy as np
import pytest
import torch

from analytic import descend_to_minima, ring_2d
from losstopo.curves import (CurveTraining, barycentric_grid, curve_points, evaluate_curves, evaluate_triangles,
                             train_curves, train_triangles, triangle_points, triangle_weights, uniform_barycentric)
from losstopo.topology import barcode_of_minima, higher_barcodes, subset_robustness

INF = math.inf


def test_curves_have_fixed_endpoints_and_pass_the_bend():
    a, bend, b = torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.0]])
    for kind in ("polychain", "bezier"):
        ends = curve_points(kind, a, bend, b, torch.tensor([[0.0, 1.0]]))
        assert torch.equal(ends[0, 0], a[0]) and torch.equal(ends[0, 1], b[0])
    assert torch.allclose(curve_points("polychain", a, bend, b, torch.tensor([0.5])), bend)
    assert torch.allclose(curve_points("polychain", a, bend, b, torch.tensor([0.25])), torch.tensor([[0.5, 1.0]]))
    # Bezier at 1/2: (a + 2 bend + b) / 4
    assert torch.allclose(curve_points("bezier", a, bend, b, torch.tensor([0.5])), torch.tensor([[1.0, 1.0]]))


def test_sub_triangle_rule_of_appendix_i():
    # t1 <= t2 <= t3 in the paper's notation t = t3 A + t2 B + t1 C: triangle AOD, coefficients (t3-t2, 3 t1, 2t2-2t1).
    w = torch.tensor([[0.6, 0.3, 0.1]])
    vertex, side, coeff = triangle_weights(w)
    assert vertex.item() == 0 and side.item() == 0  # A and D = centre of AB
    assert torch.allclose(coeff, torch.tensor([[0.3, 0.3, 0.4]]))
    assert triangle_weights(torch.tensor([[0.2, 0.1, 0.7]]))[:2] == (torch.tensor([2]), torch.tensor([2]))  # C, F
    assert triangle_weights(torch.tensor([[0.1, 0.5, 0.4]]))[:2] == (torch.tensor([1]), torch.tensor([1]))  # B, E


def test_triangle_with_exact_centres_is_barycentric_interpolation():
    vertices = torch.randn(2, 3, 5, dtype=torch.float64)
    sides = (vertices + vertices.roll(-1, dims=1)) / 2
    centre = vertices.mean(dim=1)
    w = uniform_barycentric(200, torch.Generator().manual_seed(0)).double()
    points = triangle_points(vertices, sides, centre, w[None].expand(2, -1, -1))
    expected = torch.einsum("mv,pvd->pmd", w, vertices)
    assert torch.allclose(points, expected, atol=1e-12)


def test_triangle_sides_are_the_polychains_through_the_side_centres():
    vertices = torch.randn(1, 3, 4, dtype=torch.float64)
    sides, centre = torch.randn(1, 3, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    on_ab = torch.stack([1 - s, s, torch.zeros_like(s)], dim=1)  # A -> B with C's weight 0
    points = triangle_points(vertices, sides, centre, on_ab[None])[0]
    chain = curve_points("polychain", vertices[:, 0], sides[:, 0], vertices[:, 1], s[None])[0]
    assert torch.allclose(points, chain, atol=1e-12)


def test_grid_and_sampling_cover_the_simplex():
    grid = barycentric_grid(4)
    assert len(grid) == 15 and torch.allclose(grid.sum(1), torch.ones(15, dtype=torch.float64))
    assert torch.allclose(grid * 4, (grid * 4).round())  # every (i, j, k) / 4 with i + j + k = 4, once each
    assert len({tuple((row * 4).round().int().tolist()) for row in grid}) == 15
    w = uniform_barycentric(20000, torch.Generator().manual_seed(1)).double()
    assert (w >= 0).all() and torch.allclose(w.mean(0), torch.full((3,), 1 / 3, dtype=w.dtype), atol=0.01)
    # uniform on the triangle = Dirichlet(1, 1, 1): each weight is Beta(1, 2), E[w^2] = 1/6, P(w > 1/2) = 1/4
    # (three normalised U(0, 1) draws, a common mistake, give ~0.143 and ~0.168)
    assert torch.allclose((w ** 2).mean(0), torch.full((3,), 1 / 6, dtype=w.dtype), atol=0.005)
    assert torch.allclose((w > 0.5).double().mean(0), torch.full((3,), 0.25, dtype=w.dtype), atol=0.01)


def _ring_minima():
    return torch.stack(descend_to_minima(ring_2d, [torch.tensor(p) for p in ([-1.0, 0.0], [1.0, 0.0], [0.0, -1.0])]))


def test_trained_curve_follows_the_ring_valley():
    # Garipov training lowers the mean loss along the curve; on the ring that also removes the central peak.
    minima = _ring_minima()
    start, end = minima[:1], minima[1:2]
    straight_max = evaluate_curves(ring_2d, start, (start + end) / 2, end, "polychain")[1].max()
    training = CurveTraining(steps=500, lr=lambda s: 0.01, momentum=0.9, weight_decay=0.0)
    for kind in ("polychain", "bezier"):
        bend = train_curves(ring_2d, start, end, kind, training)
        t, losses = evaluate_curves(ring_2d, start, bend, end, kind)
        assert straight_max > 0.8 and losses.max() < 0.1
        assert losses[0, 0] == pytest.approx(ring_2d(start).item()) and losses[0, -1] == pytest.approx(ring_2d(end).item())


def test_both_triangle_regimes_train_and_keep_vertices():
    minima = _ring_minima()[None]  # (1, 3, 2)
    training = CurveTraining(steps=500, lr=lambda s: 0.01, momentum=0.9, weight_decay=0.0)
    sides, centre = train_triangles(ring_2d, minima, None, training)
    fixed_sides, centre_only = train_triangles(ring_2d, minima, sides, training)
    assert torch.equal(fixed_sides, sides) and not torch.equal(centre_only, minima.mean(1))
    start_sides = (minima + minima.roll(-1, dims=1)) / 2
    untrained = evaluate_triangles(ring_2d, minima, start_sides, minima.mean(1))[1].max()
    trained = evaluate_triangles(ring_2d, minima, sides, centre)[1].max()
    assert trained < untrained
    grid, losses = evaluate_triangles(ring_2d, minima, sides, centre_only)
    corners = [int(np.argmax(np.isclose(grid, np.eye(3)[v]).all(1))) for v in range(3)]
    assert np.allclose(losses[0, corners], ring_2d(minima[0]).numpy())


def test_higher_barcodes_hand_complex():
    # Vertices 0, 1, 2; edges at 3 (01), 4 (12), 5 (02); triangle at 6.
    bars = higher_barcodes([0.0, 1.0, 2.0], {(0, 1): 3.0, (1, 2): 4.0, (0, 2): 5.0}, {(0, 1, 2): 6.0})
    assert bars[0] == [(0.0, INF), (1.0, 3.0), (2.0, 4.0)]
    assert bars[1] == [(5.0, 6.0)]  # Appendix I: from the maximum of the sides to the triangle's maximum


def test_higher_barcodes_two_triangles_on_a_square():
    # Square 0-1-2-3 with diagonal 0-2: two 1-cycles born at 4.5 and 5 (the last sides), killed at 7 and 6.
    edges = {(0, 1): 1.0, (1, 2): 2.0, (2, 3): 3.0, (0, 3): 5.0, (0, 2): 4.5}
    bars = higher_barcodes([0.0, 0.0, 0.0, 0.0], edges, {(0, 1, 2): 7.0, (0, 2, 3): 6.0})
    assert bars[1] == [(4.5, 7.0), (5.0, 6.0)]
    # A triangle lower than its sides enters with its last side: no 1-bar at all.
    assert higher_barcodes([0, 0, 0], {(0, 1): 1, (1, 2): 2, (0, 2): 3}, {(0, 1, 2): 0.5})[1] == []


def test_subset_robustness_recovers_the_full_barcode_for_the_full_set():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0, 1, 5)
    upper = np.triu(rng.uniform(1, 2, (5, 5)), 1)
    path_max = upper + upper.T
    table = subset_robustness(losses, path_max, sizes=[2, 5])
    full = barcode_of_minima(losses, path_max)
    for p, (_, death) in enumerate(full):
        assert table[5][p] == ([] if math.isinf(death) else [death])
    # Pairs: each minimum's bar against every other single minimum below it.
    lower_count = [sum(losses[q] < losses[p] for q in range(5)) for p in range(5)]
    assert [len(table[2][p]) for p in range(5)] == lower_count


def test_own_sides_complex_gives_each_triangle_its_own_boundary():
    """Fig. 16 (vertices_fixed): a triangle bounded by its own retrained sides; the 1-bar runs from the
    highest of its own sides to its maximum (Appendix I), whatever the shared curves would say."""
    from losstopo.topology import own_sides_barcodes

    bars = own_sides_barcodes([0.0, 1.0, 2.0], [((0, 1, 2), (3.0, 4.0, 5.0), 6.0)])
    assert bars[1] == [(5.0, 6.0)]
    assert bars[0] == [(0.0, float("inf")), (1.0, 3.0), (2.0, 4.0)]
    # Two triangles on the pair (0, 1) with different own sides there: two edges on one pair of minima
    # make a loop that no triangle fills (an essential 1-bar born when the second side enters).
    bars = own_sides_barcodes([0.0, 0.0, 0.0, 0.0], [((0, 1, 2), (3.0, 4.0, 4.5), 6.0),
                                                     ((0, 1, 3), (3.5, 4.0, 4.2), 7.0)])
    assert sorted(bars[1]) == [(3.5, float("inf")), (4.2, 7.0), (4.5, 6.0)]


@pytest.mark.parametrize("kind", ["polychain", "bezier"])
def test_curve_weight_decay_is_garipovs_half_squared_norm_at_the_sampled_point(kind):
    """One plain SGD step on a zero loss moves the bend by -lr * wd * c(t) * w(t), c(t) the bend's
    coefficient in w(t) (Garipov et al.), not by -lr * wd * bend."""
    start, end = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[3.0, 2.0, -1.5]])
    lr, wd, seed = 0.1, 0.3, 7
    bend = train_curves(lambda points: points.sum(-1) * 0, start, end, kind,
                        CurveTraining(steps=1, lr=lambda _: lr, momentum=0.0, weight_decay=wd), seed=seed)
    t = torch.rand(1, generator=torch.Generator().manual_seed(seed))
    mid = (start + end) / 2
    w = curve_points(kind, start, mid, end, t)
    coefficient = (1 - abs(1 - 2 * t)) if kind == "polychain" else 2 * t * (1 - t)
    assert torch.allclose(bend, mid - lr * wd * coefficient * w, atol=1e-6)
    assert not torch.allclose(bend, mid - lr * wd * mid, atol=1e-3)  # the optimiser's own decay


def _bump(thetas: torch.Tensor) -> torch.Tensor:
    """Minima at (+-1, 0) with a Gaussian bump between them, a little below the axis: a bent path goes over it."""
    x, y = thetas[:, 0], thetas[:, 1]
    return (x ** 2 - 1) ** 2 + 0.5 * y ** 2 + 2.0 * torch.exp(-(x ** 2 + (y + 0.1) ** 2) / 0.3)


def test_curve_paths_train_garipovs_objective_and_report_the_curves_exact_maximum():
    from losstopo.curves import curve_paths, garipov_curve_training

    start, end = torch.tensor([[-1.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    training = garipov_curve_training(3000, 0.02)
    (result,) = curve_paths(_bump, start, end, "polychain", training, n_points=19, seed=1)
    bend = result.points[9]
    # Independent answer: the least mean loss along the curve (Garipov's objective) over a grid of bends,
    # the curve's loss integrated on 1001 points.
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    grid = torch.linspace(-2, 2, 201, dtype=torch.float64)

    def mean_loss(bends):  # (m, 2) -> (m,)
        points = curve_points("polychain", start.expand(len(bends), -1), bends, end.expand(len(bends), -1),
                              t.expand(len(bends), -1))
        return _bump(points.reshape(-1, 2)).view(len(bends), -1).mean(dim=1)

    least = min(float(mean_loss(torch.stack([x.expand(201), grid], 1)).min()) for x in grid)
    assert float(mean_loss(bend[None])) <= least + 1e-3
    assert float(mean_loss(bend[None])) < 0.5 * float(mean_loss(torch.zeros(1, 2, dtype=torch.float64)))
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)
    exact_max = float(_bump(curve_points("polychain", start, bend[None], end, t[None])[0]).max())
    straight_max = float(_bump(torch.stack([torch.linspace(-1, 1, 4001), torch.zeros(4001)], 1).double()).max())
    assert abs(result.max_loss - exact_max) <= 1e-4 * exact_max
    assert result.max_loss < 0.8 * straight_max  # the curve went around the bump
    assert torch.equal(result.points[0], start[0]) and torch.equal(result.points[-1], end[0])
    assert set(result.max_at_steps) == {2400, 3000} and math.isfinite(result.relative_change())


def test_a_diverging_curve_is_named_not_evaluated():
    from losstopo.curves import curve_paths, garipov_curve_training
    from losstopo.paths import PathsDiverged

    def steep(thetas):  # the gradient grows with the point: a large step overshoots ever further
        return (thetas ** 4).sum(dim=1)

    start, end = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(PathsDiverged) as error:
        curve_paths(steep, start, end + torch.tensor([[0.0, 0.0], [0.0, 30.0]]), "polychain",
                    garipov_curve_training(50, 0.01), n_points=5)
    assert error.value.paths == [1]


class _Interrupted(Exception):
    pass


class _MinibatchRing:
    """ring_2d plus a noise term drawn from the training's generator, as a minibatch loss draws its rows; counts the
    minibatches drawn and raises at the ``fail_at``-th, as a killed job stops."""

    def __init__(self, fail_at=None):
        self.fail_at, self.drawn = fail_at, 0

    def __call__(self, thetas):
        return ring_2d(thetas)

    def minibatch(self, generator):
        self.drawn += 1
        if self.drawn == self.fail_at:
            raise _Interrupted
        shift = torch.randn(2, generator=generator).to(torch.float64) * 0.05
        return lambda thetas: ring_2d(thetas + shift)


def test_interrupted_curve_and_triangle_training_resume_at_their_last_saved_step_and_end_bitwise_as_the_whole(
        tmp_path, monkeypatch):
    from losstopo.resume import job_scratch

    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    minima = _ring_minima().double()
    training = CurveTraining(steps=60, lr=lambda s: 0.02 * (1 - s / 60), momentum=0.9, weight_decay=1e-3)
    runs = {"curves": lambda loss: train_curves(loss, minima[:2], minima[1:], "polychain", training, seed=3,
                                                checkpoint=40),
            "triangles": lambda loss: train_triangles(loss, minima[None], None, training, seed=4, checkpoint=20)}
    for name, run in runs.items():
        whole = run(_MinibatchRing())
        for fail_at in (2, 21, 41, 60):
            scratch = tmp_path / f"{name}-{fail_at}"
            with job_scratch(scratch), pytest.raises(_Interrupted):
                run(_MinibatchRing(fail_at))
            again = _MinibatchRing()
            with job_scratch(scratch):
                resumed = run(again)
            for got, expected in zip(torch.utils._pytree.tree_leaves(resumed), torch.utils._pytree.tree_leaves(whole)):
                assert torch.equal(got, expected), (name, fail_at)
            assert again.drawn == training.steps - (fail_at - 1)  # on from the step it was interrupted in
