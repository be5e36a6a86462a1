"""Partner minima, permutation points and their count (weight-space symmetry paper §4.1-4.3)."""

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from losstopo.errors import LosstopoError
from losstopo.permutation import (
    Convergence,
    MLPParams,
    count_permutation_points,
    distance_schedule,
    equalise_output_weights,
    incoming_vectors,
    merge_candidates,
    minimise,
    neuron_distance,
    permutation_path,
    permutation_paths,
    permutation_point_from_smaller,
    permutation_points_lower_bound,
    quadratic_loss,
    redistribute_output_weights,
    swap_neurons,
)

F64 = torch.float64


def random_mlp(sizes, seed, bias_scale=0.5):
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n_out, n_in, generator=generator, dtype=F64) / math.sqrt(n_in)
               for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [bias_scale * torch.randn(n_out, generator=generator, dtype=F64) for n_out in sizes[1:]]
    return MLPParams(weights, biases)


def grad_norm(params, loss_fn):
    variables = [t.detach().clone().requires_grad_(True) for t in params.weights + params.biases]
    depth = params.depth
    loss = loss_fn(MLPParams(variables[:depth], variables[depth:], params.flatten_input))
    return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, variables)])))


# ---------------------------------------------------------------- representation and partner minima

def test_module_round_trip_computes_the_same_function():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 1, 2, 3, dtype=F64)
    params = MLPParams.from_module(module)
    assert params.layer_sizes == (6, 5, 4, 3) and params.flatten_input
    torch.testing.assert_close(params.forward(x), module(x), rtol=0, atol=0)
    torch.testing.assert_close(params.to_module()(x), module(x), rtol=0, atol=0)
    restored = MLPParams.from_flat(params.flat(), params.layer_sizes, flatten_input=True)
    torch.testing.assert_close(restored.forward(x), module(x), rtol=0, atol=0)
    torch.testing.assert_close(params.flat(), torch.cat([p.reshape(-1) for p in module.parameters()]))


def test_from_module_rejects_other_architectures():
    with pytest.raises(LosstopoError):
        MLPParams.from_module(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    with pytest.raises(LosstopoError):
        MLPParams.from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))


@pytest.mark.parametrize("layer, l, m", [(1, 0, 4), (2, 1, 3)])
def test_partner_minimum_is_the_swap_and_computes_the_same_function(layer, l, m):
    params = random_mlp((3, 5, 4, 2), seed=1)
    partner = swap_neurons(params, layer, l, m)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(partner.forward(x), params.forward(x), rtol=1e-12, atol=1e-12)
    assert not torch.equal(partner.flat(), params.flat())

    W_in, b_in, W_out = params.weights[layer - 1], params.biases[layer - 1], params.weights[layer]
    assert torch.equal(partner.weights[layer - 1][l], W_in[m]) and torch.equal(partner.weights[layer - 1][m], W_in[l])
    assert torch.equal(partner.biases[layer - 1][l], b_in[m]) and torch.equal(partner.biases[layer - 1][m], b_in[l])
    assert torch.equal(partner.weights[layer][:, l], W_out[:, m]) and torch.equal(partner.weights[layer][:, m], W_out[:, l])
    others = [i for i in range(W_in.shape[0]) if i not in (l, m)]
    assert torch.equal(partner.weights[layer - 1][others], W_in[others])
    assert torch.equal(partner.biases[layer - 1][others], b_in[others])
    assert torch.equal(partner.weights[layer][:, others], W_out[:, others])
    untouched = [k for k in range(params.depth) if k not in (layer - 1, layer)]
    for k in untouched:
        assert torch.equal(partner.weights[k], params.weights[k])
    for k in range(params.depth):
        if k != layer - 1:
            assert torch.equal(partner.biases[k], params.biases[k])
    assert torch.equal(swap_neurons(partner, layer, l, m).flat(), params.flat())


def test_merge_candidates_picks_the_most_parallel_parameter_vectors():
    params = random_mlp((3, 4, 6, 2), seed=3)
    params.weights[1][4] = 2.0 * params.weights[1][1] + 1e-3
    params.biases[1][4] = 2.0 * params.biases[1][1]
    assert merge_candidates(params, layer=2) == (1, 4)


def test_distance_schedule_is_log_spaced_down_to_one_ten_thousandth():
    schedule = distance_schedule(3.0, 200)
    assert len(schedule) == 200 and schedule[0].item() == pytest.approx(3.0) and schedule[-1].item() == pytest.approx(3e-4)
    ratios = schedule[1:] / schedule[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 10 ** (-4 / 199)))


# ---------------------------------------------------------------- Definition 4 / Proposition 1

@pytest.fixture(scope="module")
def smaller_minimum():
    """A 3-3-3-2 student trained to convergence on 300 points labelled by a 3-4-3-2 teacher.

    ReLU students often stop where a data point sits on a kink (no zero gradient there); this
    seed reaches a smooth minimum, which the tests below check before relying on it.
    """
    teacher = random_mlp((3, 4, 3, 2), seed=8)
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    loss_fn = quadratic_loss(x, teacher.forward(x).detach())
    student, _, converged = minimise(random_mlp((3, 3, 3, 2), seed=25), loss_fn,
                                     Convergence(max_iter=3000, grad_tol=1e-11, rel_tol=0.0))
    assert converged
    return student, x, teacher, loss_fn


def test_permutation_point_from_a_smaller_minimum_is_a_critical_point(smaller_minimum):
    student, x, teacher, loss_fn = smaller_minimum
    small_grad = grad_norm(student, loss_fn)
    assert small_grad < 1e-8 and float(loss_fn(student)) > 1e-4  # a critical point that is not the teacher
    for split in (0.5, 0.2):
        point = permutation_point_from_smaller(student, layer=1, neuron=1, split=split)
        assert point.layer_sizes == (3, 4, 3, 2)
        torch.testing.assert_close(point.forward(x), student.forward(x), rtol=1e-12, atol=1e-12)
        # the duplicated neuron's gradients are split·g and (1-split)·g, its two output weights both get g
        assert grad_norm(point, loss_fn) <= math.sqrt(2) * small_grad + 1e-14
    # the same construction from an untrained smaller network is far from critical
    assert grad_norm(permutation_point_from_smaller(random_mlp((3, 3, 3, 2), seed=25), 1, 1), loss_fn) > 1e-2


def test_loss_is_constant_along_output_weight_redistribution_at_a_permutation_point(smaller_minimum):
    student, x, teacher, loss_fn = smaller_minimum
    point = permutation_point_from_smaller(student, layer=1, neuron=2)
    l, m = 2, 3  # the duplicated neuron and its copy
    assert neuron_distance(point, 1, l, m) == 0
    base = float(loss_fn(point))
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        shift = 2.0 * torch.randn(point.layer_sizes[2], generator=generator, dtype=F64)  # n_{k+1} directions
        moved = redistribute_output_weights(point, 1, l, m, shift)
        assert float(loss_fn(moved)) == pytest.approx(base, rel=1e-10)
        assert grad_norm(moved, loss_fn) < 1e-8  # a plateau of critical points (Theorem 1)
    # away from a permutation point the same move changes the function
    distinct = random_mlp((3, 4, 3, 2), seed=8)
    assert float(loss_fn(redistribute_output_weights(distinct, 1, l, m, torch.ones(3, dtype=F64)))) != pytest.approx(
        float(loss_fn(distinct)), rel=1e-3)


def test_equalisation_keeps_the_loss_and_ends_swap_invariant(smaller_minimum):
    student, x, teacher, loss_fn = smaller_minimum
    point = permutation_point_from_smaller(student, layer=1, neuron=0, split=0.15)
    segment = equalise_output_weights(point, layer=1, l=0, m=3, n_points=9)
    losses = torch.tensor([float(loss_fn(p)) for p in segment], dtype=F64)
    torch.testing.assert_close(losses, torch.full_like(losses, losses[0].item()), rtol=1e-9, atol=0)
    end = segment[-1]
    assert torch.equal(end.weights[1][:, 0], end.weights[1][:, 3])
    torch.testing.assert_close(end.weights[1][:, 0], student.weights[1][:, 0] / 2)
    assert torch.equal(swap_neurons(end, 1, 0, 3).flat(), end.flat())
    with pytest.raises(LosstopoError):
        equalise_output_weights(point, layer=1, l=0, m=1)


# ---------------------------------------------------------------- the 2-D toy path (Fig. 2)

N_STEPS = 30


@pytest.fixture(scope="module")
def toy_path():
    teacher = random_mlp((2, 5, 1), seed=10, bias_scale=0.3)
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    loss_fn = quadratic_loss(x, teacher.forward(x).detach())
    l, m = merge_candidates(teacher, layer=1)
    rule = Convergence(max_iter=50, rel_tol=1e-7, abs_tol=1e-12)
    path = permutation_path(teacher, 1, l, m, loss_fn, n_steps=N_STEPS, rule=rule)
    return teacher, loss_fn, (l, m), path


def test_toy_path_runs_from_the_minimum_through_a_saddle_to_the_partner(toy_path):
    teacher, loss_fn, (l, m), path = toy_path
    assert path.losses[0].item() < 1e-20
    assert torch.equal(path.params[-1].flat(), swap_neurons(teacher, 1, l, m).flat())
    assert path.losses[-1].item() < 1e-20
    # four neurons cannot fit a five-neuron teacher: the permutation point costs loss
    assert path.losses[path.permutation_index].item() > 1e-5
    assert path.merge.converged[-1]  # the d = 0 descent met the rule


def test_toy_path_halves_are_mirrored(toy_path):
    teacher, loss_fn, (l, m), path = toy_path
    n = len(path.params)
    assert n == 2 * path.permutation_index + 1
    for i in range(n):
        assert torch.equal(path.params[i].flat(), swap_neurons(path.params[n - 1 - i], 1, l, m).flat())
    torch.testing.assert_close(path.losses, path.losses.flip(0), rtol=1e-12, atol=1e-18)
    torch.testing.assert_close(path.distances, path.distances.flip(0))
    assert path.flat().shape == (n, teacher.flat().numel())


def test_toy_path_holds_the_distance_constraint_at_every_step(toy_path):
    teacher, loss_fn, (l, m), path = toy_path
    merge = path.merge
    schedule = distance_schedule(float(neuron_distance(teacher, 1, l, m)), N_STEPS)
    assert len(merge.params) == N_STEPS + 1
    torch.testing.assert_close(merge.distances, torch.cat([schedule, torch.zeros(1, dtype=F64)]))
    measured = torch.stack([neuron_distance(p, 1, l, m) for p in merge.params])
    torch.testing.assert_close(measured, merge.distances, rtol=1e-10, atol=0)
    vectors = incoming_vectors(merge.params[-1], 1)
    assert torch.equal(vectors[l], vectors[m])  # d = 0: the permutation point


def test_toy_path_equalisation_segment_has_constant_loss(toy_path):
    teacher, loss_fn, (l, m), path = toy_path
    segment = path.losses[path.equalisation]
    assert len(segment) == 11
    torch.testing.assert_close(segment, torch.full_like(segment, segment[0].item()), rtol=1e-6, atol=0)
    point = path.params[path.permutation_index]
    assert torch.equal(point.weights[1][:, l], point.weights[1][:, m])
    first = path.params[path.equalisation.start]
    assert not torch.equal(first.weights[1][:, l], first.weights[1][:, m])


# ---------------------------------------------------------------- Proposition 3: counting

def brute_force_T(K, n):
    """K-th order permutation points per global minimum, by enumeration (Definition 6).

    A K-th order point puts on the n neurons the n-K distinct parameter vectors of a smaller
    network's minimum, every one at least once, with copies sharing their output weight vector;
    so a point is a surjective labelling neurons -> vectors. A global minimum has n distinct
    neurons, so n! of them share one function.
    """
    vectors = set(range(n - K))
    points = {labels for labels in itertools.product(sorted(vectors), repeat=n) if set(labels) == vectors}
    return Fraction(len(points), math.factorial(n))


@pytest.mark.parametrize("K, n", [(K, n) for K in (1, 2, 3, 4) for n in range(K + 1, 8)])
def test_T_matches_brute_force(K, n):
    assert count_permutation_points(K, n) == brute_force_T(K, n)


@pytest.mark.parametrize("K, n", [(K, n) for K in (1, 2, 3, 4) for n in range(2 * K, 13)])
def test_T_respects_the_lower_bound_and_stirling_identity(K, n):
    stirling = sum((-1) ** j * math.comb(n - K, j) * (n - K - j) ** n for j in range(n - K + 1)) // math.factorial(n - K)
    assert count_permutation_points(K, n) == Fraction(stirling * math.factorial(n - K), math.factorial(n))
    assert count_permutation_points(K, n) >= permutation_points_lower_bound(K, n)


def test_T_rejects_orders_without_neurons_left():
    with pytest.raises(ValueError):
        count_permutation_points(3, 3)
    with pytest.raises(ValueError):
        count_permutation_points(0, 4)


# ---------------------------------------------------------------- stacks of networks, batched merges

def test_a_stack_computes_each_networks_function_and_round_trips_flat():
    networks = [random_mlp((3, 5, 4, 2), seed=s) for s in range(3)]
    stack = MLPParams.stack(networks)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    outputs = stack.forward(x)
    assert stack.batch_shape == (3,) and outputs.shape == (3, 7, 2)
    for i, net in enumerate(networks):
        torch.testing.assert_close(outputs[i], net.forward(x), rtol=1e-12, atol=1e-12)
        assert torch.equal(stack.select(i).flat(), net.flat())
    assert torch.equal(MLPParams.from_flat(stack.flat(), (3, 5, 4, 2)).flat(), stack.flat())
    assert torch.equal(MLPParams.stack(networks[:1]).forward(x)[0], networks[0].forward(x))  # bit for bit


def test_quadratic_loss_of_a_stack_uses_each_problems_own_targets():
    teachers = [random_mlp((3, 4, 2), seed=s) for s in (1, 2)]
    students = [random_mlp((3, 4, 2), seed=s) for s in (3, 4, 5)]
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    targets = torch.stack([t.forward(x) for t in teachers])
    batch = quadratic_loss(x, targets, normalise=True)(MLPParams.stack(students), torch.tensor([1, 0, 1]))
    expected = [quadratic_loss(x, targets[p], normalise=True)(s) for p, s in zip((1, 0, 1), students)]
    torch.testing.assert_close(batch, torch.stack(expected), rtol=1e-12, atol=0)
    with pytest.raises(LosstopoError):
        quadratic_loss(x, targets)(students[0])  # whose targets?


def test_batched_merges_match_each_merge_alone():
    teacher = random_mlp((2, 4, 1), seed=12, bias_scale=0.3)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    loss_fn = quadratic_loss(x, teacher.forward(x).detach())
    pairs = [(0, 1), (1, 3), (0, 2)]
    # Few iterations per distance: the batch's rounding (one matrix product for all three) is amplified
    # by the ReLU network's kinks only to ~1e-8 in the parameters (4.4e-8 at most), instead of ~1e-4
    # over hundreds of iterations.
    rule = Convergence(max_iter=10, rel_tol=1e-8, abs_tol=1e-14)
    together = permutation_paths([teacher] * 3, 1, pairs, loss_fn, n_steps=6, rule=rule)
    for (l, m), batched in zip(pairs, together):
        alone = permutation_path(teacher, 1, l, m, loss_fn, n_steps=6, rule=rule)
        assert batched.merge.iterations == alone.merge.iterations
        assert batched.losses.max() > 1e-6  # a real barrier, not a trivial path
        torch.testing.assert_close(batched.losses, alone.losses, rtol=1e-7, atol=1e-15)
        torch.testing.assert_close(batched.flat(), alone.flat(), rtol=0, atol=1e-7)
        assert torch.equal(batched.params[-1].flat(), swap_neurons(teacher, 1, l, m).flat())


# ---------------------------------------------------------------- whitened inputs

from losstopo.permutation import InputWhitening  # noqa: E402


def correlated_inputs(n, dim, seed):
    """Inputs whose features are mixed and scaled over three orders of magnitude (an ill-conditioned Gram matrix)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=F64) @ torch.diag(torch.logspace(-2, 1, dim, dtype=F64))
    return 3.0 + torch.randn(n, dim, generator=generator, dtype=F64) @ mixing.T


def test_whitening_changes_coordinates_not_the_network_function():
    x = correlated_inputs(300, 6, 0)
    net = random_mlp([6, 5, 4, 2], 1)
    whitening = InputWhitening.fit(x, ridge=1e-9)
    z = whitening.inputs(x)
    assert torch.allclose(torch.cov(z.T), torch.eye(6, dtype=F64), atol=1e-2)  # whitened (up to the ridge)
    assert torch.allclose(whitening.whiten(net).forward(z), net.forward(x), atol=1e-10)
    back = whitening.restore(whitening.whiten(net))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(back.weights + back.biases, net.weights + net.biases))
    with pytest.raises(LosstopoError, match="ridge > 0"):
        InputWhitening.fit(x, ridge=0.0)


def test_whitened_descent_gets_lower_in_the_same_budget_and_returns_original_coordinates():
    """Merging two layer-2 neurons of a teacher on ill-conditioned inputs, 40 L-BFGS iterations per distance:
    descent in whitened coordinates ends lower at every distance; the path comes back in the original
    coordinates (its recorded losses are the original loss of its points, the start is the teacher itself)."""
    x = correlated_inputs(200, 6, 2)
    teacher = random_mlp([6, 5, 4, 2], 3)
    loss_fn = quadratic_loss(x, teacher.forward(x)[None].clone())
    pair = merge_candidates(teacher, 2)
    rule = Convergence(max_iter=40, rel_tol=0.0, grad_tol=0.0)
    plain = permutation_paths([teacher], 2, [pair], loss_fn, 4, 1e-2, rule)[0]
    whitened = permutation_paths([teacher], 2, [pair], loss_fn, 4, 1e-2, rule,
                                 whitening=InputWhitening.fit(x, ridge=1e-6))[0]
    merge_losses, plain_losses = whitened.merge.losses[1:], plain.merge.losses[1:]
    assert bool((merge_losses < plain_losses).all()), (merge_losses, plain_losses)
    assert whitened.losses[0] == 0.0 and torch.equal(whitened.params[0].weights[0], teacher.weights[0])
    recomputed = torch.cat([loss_fn(MLPParams.stack([p]), torch.tensor([0])) for p in whitened.params])
    assert torch.allclose(recomputed, whitened.losses, rtol=1e-9, atol=1e-15)
    at_point = whitened.params[whitened.permutation_index]
    assert float(neuron_distance(at_point, 2, *pair)) < 1e-12  # ϑ_l = ϑ_m in the original coordinates too
    with pytest.raises(LosstopoError, match="layer >= 2"):
        permutation_paths([teacher], 1, [(0, 1)], loss_fn, 4, 1e-2, rule, whitening=InputWhitening.fit(x))


def test_the_permutation_point_gets_its_own_budget_in_two_halves():
    """final_max_iter is the d = 0 descent's budget alone, run in two halves without the relative rule; the loss
    after the first half is kept; every distance step keeps max_iter; halved() halves both budgets."""
    from losstopo.descent import halved

    teacher = random_mlp((2, 4, 1), seed=12, bias_scale=0.3)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    loss_fn = quadratic_loss(x, teacher.forward(x).detach())
    steps = Convergence(max_iter=3, rel_tol=0.0, abs_tol=0.0, grad_tol=0.0)
    rule = Convergence(max_iter=3, rel_tol=0.5, abs_tol=1.0, grad_tol=0.0, final_max_iter=40)
    path = permutation_path(teacher, 1, 0, 1, loss_fn, n_steps=6, rule=rule)
    # rel_tol 0.5 would stop any descent at once: the steps stop after their first iteration, d = 0 runs 2 x 20
    assert path.merge.iterations[1:-1] == [1] * 5 and path.merge.iterations[-1] == 40
    plain = permutation_path(teacher, 1, 0, 1, loss_fn, n_steps=6, rule=steps)
    assert plain.merge.iterations[-1] == 3 and plain.merge.final_half_loss is None
    # the first half's loss is kept, and the second half lowered it further
    final = path.losses[path.permutation_index].item()
    assert final < path.merge.final_half_loss < plain.losses[plain.permutation_index].item()
    assert (halved(rule).max_iter, halved(rule).final_max_iter) == (1, 20)
    assert halved(steps).final_max_iter is None
