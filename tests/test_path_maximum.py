"""The certified path maximum by refinement (losstopo.path_maximum) on toy teachers 2 -> 3 -> 1 (quadratic loss,
float64), whose merge steps get 2 L-BFGS iterations each: far from their constrained minima."""

import dataclasses
import math

import pytest
import torch

from losstopo.descent import Convergence, descend_batch
from losstopo.errors import LosstopoError
from losstopo.path_maximum import certify_maxima
from losstopo.permutation import (InputWhitening, MergePath, MLPParams, _constrained, incoming_vectors, losses_along,
                                  merge_neurons_batch, one_problem, permutation_paths,
                                  quadratic_loss)

F64 = torch.float64
# a few steps, each 2 iterations (far from converged); the d = 0 point gets its own 2 x 200
RULE = Convergence(max_iter=2, rel_tol=0.0, grad_tol=1e-12, history_size=5, final_max_iter=200)
BUDGET = 200  # per refinement: 2 x 100
LONG = Convergence(max_iter=1000, rel_tol=0.0, grad_tol=1e-12, history_size=5)  # "converged": an independent descent
# The certificate's resolution: a refinement converged when its second half moved the loss by <= 1% of itself. The
# certified maximum must match the long descents' maximum to that resolution (in practice it does to ~1e-9).
TOLERANCE = 0.01


def random_mlp(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n_out, n_in, generator=generator, dtype=F64) / math.sqrt(n_in)
               for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [0.5 * torch.randn(n_out, generator=generator, dtype=F64) for n_out in sizes[1:]]
    return MLPParams(weights, biases)


def own_outputs(teachers, inputs):
    with torch.no_grad():
        return quadratic_loss(inputs, torch.stack([t.forward(inputs) for t in teachers]))


@pytest.fixture(scope="module")
def toy():
    teachers = [random_mlp((2, 3, 1), seed) for seed in (1, 2)]
    inputs = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    loss_fn = own_outputs(teachers, inputs)
    merges = merge_neurons_batch(teachers, 1, [(0, 1)] * 2, loss_fn, n_steps=6, rule=RULE)
    return merges, loss_fn, certify_maxima(merges, loss_fn, BUDGET, RULE)


def long_descents(merges, loss_fn):
    """(paths, points) losses: every merge point descended independently at its own distance for LONG."""
    rows, problems, distances, ls, ms = [], [], [], [], []
    for b, merge in enumerate(merges):
        for k, point in enumerate(merge.params):
            offset = incoming_vectors(point, merge.layer)[merge.m] - incoming_vectors(point, merge.layer)[merge.l]
            if float(offset.norm()) == 0:
                start = incoming_vectors(merge.params[0], merge.layer)
                offset = start[merge.m] - start[merge.l]
            rows.append(torch.cat([point.flat(), offset / offset.norm()]))
            problems.append(b), distances.append(merge.distances[k]), ls.append(merge.l), ms.append(merge.m)
    problems, distances, ls, ms = (torch.tensor(v) for v in (problems, distances, ls, ms))
    sizes, n_free = merges[0].params[0].layer_sizes, merges[0].params[0].flat().shape[0]

    def objective(x, index):
        free = MLPParams.from_flat(x[:, :n_free], sizes)
        return loss_fn(_constrained(free, x[:, n_free:], distances[index], merges[0].layer, ls[index], ms[index]),
                       problems[index])

    result = descend_batch(objective, torch.stack(rows), LONG)
    return result.loss.view(len(merges), -1)


def test_refinement_lowers_the_maximum_to_the_converged_paths_maximum(toy):
    merges, loss_fn, maxima = toy
    converged = long_descents(merges, loss_fn)
    converged[:, 0] = torch.stack([m.losses[0] for m in merges])  # the start is exact: no descent
    for merge, maximum, long in zip(merges, maxima, converged):
        before = float(merge.losses.max())
        assert maximum.certified
        assert before > (1 + 10 * TOLERANCE) * maximum.value  # the unrefined maximum was well above: a real test
        # the value a long independent descent at the certified point's distance reaches ...
        assert maximum.value == pytest.approx(float(long[maximum.index]), rel=TOLERANCE)
        # ... and no step, descended to convergence, ends above it
        assert float(long.max()) <= (1 + TOLERANCE) * maximum.value
        assert maximum.value == float(maximum.losses.max()) == float(maximum.losses[maximum.index])


def test_refinement_never_raises_a_loss_and_only_replaces_refined_points(toy):
    merges, loss_fn, maxima = toy
    for b, (merge, maximum) in enumerate(zip(merges, maxima)):
        assert bool((maximum.losses <= merge.losses).all())
        untouched = [k for k in range(len(merge.losses)) if k not in maximum.refined]
        assert torch.equal(maximum.losses[untouched], merge.losses[untouched])
        for k, point in maximum.points.items():  # each refined loss is its point's, at the step's own distance
            assert float(losses_along([point], loss_fn, b)[0]) == float(maximum.losses[k])
            vectors = incoming_vectors(point, merge.layer)
            assert float((vectors[merge.m] - vectors[merge.l]).norm()) == pytest.approx(float(merge.distances[k]),
                                                                                          rel=1e-9, abs=1e-12)


def test_refinement_stops_once_the_argmax_is_certified(toy):
    merges, loss_fn, maxima = toy
    for b, (merge, maximum) in enumerate(zip(merges, maxima)):
        assert maximum.converged[maximum.index]
        assert 0 < len(maximum.refined) < 10  # stopped before the cap
        assert maximum.iterations <= BUDGET * len(maximum.refined)
        # every refinement was of the argmax of its time: a point at or above the final maximum, and never one
        # already certified (the start, the converged d = 0 point, a converged refinement)
        certified_before = {0} | ({len(merge.losses) - 1} if merge.final_half_loss is not None else set())
        for k in maximum.refined:
            assert float(merge.losses[k]) >= maximum.value
            assert k not in certified_before
            certified_before |= {k} if maximum.converged[k] else set()
        # the same call with a cap of exactly the refinements it used certifies the same maximum
        again = certify_maxima([merge], _problem(loss_fn, b), BUDGET, RULE,
                               max_refinements=len(maximum.refined))[0]
        assert again.certified and again.refined == maximum.refined
        assert again.value == pytest.approx(maximum.value, rel=1e-12)


def _problem(loss_fn, b):
    """Problem b of a batch loss as the only problem of a batch loss."""
    def loss(params, index):
        return loss_fn(params, torch.full_like(index, b))
    return loss


def test_a_settled_maximum_is_bracketed_without_further_work(toy):
    """The refined paths again: every point now lies within 1% of the maximum and the d = 0 point's descent
    converged, so the maximum is bracketed between them and nothing is refined. Told that the d = 0 descent moved
    its loss by 5%, only the start (loss 0) is below: the argmax is refined once more (a new call does not know it
    converged), converges at once and keeps its value."""
    merges, loss_fn, maxima = toy
    for b, (merge, maximum) in enumerate(zip(merges, maxima)):
        refined = dataclasses.replace(merge, losses=maximum.losses,
                                      params=[maximum.points.get(k, p) for k, p in enumerate(merge.params)])
        again = certify_maxima([refined], _problem(loss_fn, b), BUDGET, RULE)[0]
        assert maximum.index != len(merge.losses) - 1  # the toy's maxima are interior
        assert again.bracketed and not again.certified and again.refined == []
        assert again.lower == float(maximum.losses[-1]) < again.value == float(maximum.losses.max())
        assert again.value - again.lower <= TOLERANCE * again.value
        unsure = dataclasses.replace(refined, final_half_loss=1.05 * float(refined.losses[-1]))
        once_more = certify_maxima([unsure], _problem(loss_fn, b), BUDGET, RULE)[0]
        assert once_more.certified and once_more.bracketed and once_more.lower == once_more.value
        assert once_more.index == maximum.index and once_more.refined == [maximum.index]
        assert once_more.value == pytest.approx(maximum.value, rel=TOLERANCE) and once_more.value <= maximum.value


def test_a_wide_bracket_is_not_a_result(toy):
    """Before any refinement the toy's maxima lie far above every converged point: not bracketed, not certified."""
    merges, loss_fn, _ = toy
    for b, merge in enumerate(merges):
        none = certify_maxima([merge], _problem(loss_fn, b), BUDGET, RULE, max_refinements=0)[0]
        assert not none.certified and not none.bracketed
        assert none.value - none.lower > TOLERANCE * none.value


def test_the_d0_point_counts_as_refined_by_its_own_final_descent(toy):
    """A path of the start and its d = 0 point only (the merge's first and last points): the maximum is at d = 0.
    Its final descent converged: certified with no refinement. Told that the final descent's second half moved
    the loss by 5%: the d = 0 point is refined (direction-free) and then certified."""
    merges, loss_fn, _ = toy
    merge = merges[0]
    short = dataclasses.replace(merge, distances=merge.distances[[0, -1]], losses=merge.losses[[0, -1]],
                                params=[merge.params[0], merge.params[-1]], iterations=[0, merge.iterations[-1]],
                                converged=[True, merge.converged[-1]])
    assert float(short.losses[1]) > 0 and float(short.distances[1]) == 0
    assert abs(merge.final_half_loss - float(merge.losses[-1])) <= TOLERANCE * float(merge.losses[-1])
    loss = _problem(loss_fn, 0)
    done = certify_maxima([short], loss, BUDGET, RULE)[0]
    assert done.certified and done.index == 1 and done.refined == [] and done.value == float(merge.losses[-1])
    unsure = dataclasses.replace(short, final_half_loss=1.05 * float(merge.losses[-1]))
    again = certify_maxima([unsure], loss, BUDGET, RULE)[0]
    assert again.refined == [1] and again.certified and again.value <= float(merge.losses[-1])
    vectors = incoming_vectors(again.points[1], merge.layer)
    assert torch.equal(vectors[merge.l], vectors[merge.m])  # still at d = 0


def test_the_cap_reports_an_uncertified_maximum(toy):
    merges, loss_fn, maxima = toy
    many = next(b for b, m in enumerate(maxima) if len(m.refined) >= 2)  # a path that needed >= 2 refinements
    merge = merges[many]
    loss = _problem(loss_fn, many)
    capped = certify_maxima([merge], loss, BUDGET, RULE, max_refinements=1)[0]
    assert not capped.certified and capped.refined == maxima[many].refined[:1]
    assert capped.value == float(capped.losses.max()) > maxima[many].value  # still an upper bound, not yet tight
    assert capped.index not in capped.refined or not capped.converged[capped.index]
    none = certify_maxima([merge], loss, BUDGET, RULE, max_refinements=0)[0]
    assert not none.certified and none.refined == [] and none.value == float(merge.losses.max())
    # a refinement too short to converge (2 x 1 iterations) cannot certify its point either
    short = certify_maxima([merge], loss, 2, RULE, max_refinements=1)[0]
    assert short.refined == [int(merge.losses.argmax())] and not short.converged[short.refined[0]]
    assert not short.certified


def test_the_paths_refined_together_match_each_alone(toy):
    merges, loss_fn, maxima = toy
    for b, (merge, together) in enumerate(zip(merges, maxima)):
        alone = certify_maxima([merge], _problem(loss_fn, b), BUDGET, RULE)[0]
        assert alone.refined == together.refined and alone.certified == together.certified
        # a batch rounds its matrix products differently; L-BFGS carries that along: ~1e-8 relative here
        torch.testing.assert_close(alone.losses, together.losses, rtol=1e-6, atol=1e-14)


def test_whitened_refinement_measures_losses_in_the_original_coordinates():
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(4, 4, generator=generator, dtype=F64) * torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=F64)
    inputs = torch.randn(100, 4, generator=generator, dtype=F64) @ mixing + 2.0  # correlated, off-centre pixels
    teacher = random_mlp((4, 4, 3, 1), 5)
    teacher.flatten_input = True
    loss_fn = own_outputs([teacher], inputs)
    whitening = InputWhitening.fit(inputs, 1e-2)
    merge = permutation_paths([teacher], 2, [(0, 1)], loss_fn, n_steps=5, rule=RULE, whitening=whitening)[0].merge
    maximum = certify_maxima([merge], loss_fn, BUDGET, RULE, whitening=whitening)[0]
    assert maximum.refined and bool((maximum.losses <= merge.losses).all())
    for k, point in maximum.points.items():
        assert point.weights[0].shape == teacher.weights[0].shape
        assert float(losses_along([point], loss_fn, 0)[0]) == float(maximum.losses[k])  # original coordinates
    with pytest.raises(LosstopoError, match="whitening"):
        certify_maxima([merge], one_problem(lambda p: loss_fn(MLPParams.stack([p]), torch.tensor([0]))[0]),
                       BUDGET, RULE, whitening=whitening)


def test_bad_settings_are_refused(toy):
    merges, loss_fn, _ = toy
    with pytest.raises(LosstopoError):
        certify_maxima(merges, loss_fn, 1, RULE)
    with pytest.raises(LosstopoError):
        certify_maxima(merges, loss_fn, BUDGET, RULE, max_refinements=-1)
    assert certify_maxima([], loss_fn, BUDGET, RULE) == []
    assert isinstance(merges[0], MergePath)


class Interrupted(Exception):
    pass


class CountingLoss:
    """``loss_fn`` that counts its calls and raises at call ``fail_at`` (1-based), as a killed job stops."""

    def __init__(self, loss_fn, fail_at=None):
        self.loss_fn, self.fail_at, self.calls = loss_fn, fail_at, 0

    def __call__(self, params, index):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted
        return self.loss_fn(params, index)


def _interrupted_then_resumed(run, loss_fn, fail_at, scratch):
    """``run(loss)`` stopped at call ``fail_at``, then run again in the same job scratch: (result, calls of the rerun)."""
    from losstopo.resume import job_scratch

    with job_scratch(scratch), pytest.raises(Interrupted):
        run(CountingLoss(loss_fn, fail_at))
    again = CountingLoss(loss_fn)
    with job_scratch(scratch):
        return run(again), again.calls


def _same_merges(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.distances, y.distances) and torch.equal(x.losses, y.losses)
        assert (x.iterations, x.converged, x.final_half_loss) == (y.iterations, y.converged, y.final_half_loss)
        assert all(torch.equal(p.flat(), q.flat()) for p, q in zip(x.params, y.params))


def test_an_interrupted_merge_resumes_at_its_last_saved_step_and_ends_as_the_uninterrupted_one(
        toy, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    merges, loss_fn, _ = toy
    teachers = [merge.params[0] for merge in merges]

    def run(loss):
        return merge_neurons_batch(teachers, 1, [(0, 1)] * 2, loss, n_steps=6, rule=RULE)

    counted = CountingLoss(loss_fn)
    _same_merges(run(counted), merges)
    total = counted.calls
    # in the distance steps, in each half of the d = 0 descent, and after the loop (the losses along the path)
    for n, fail_at in enumerate((5, total // 3, 2 * total // 3, total - 2)):
        resumed, calls = _interrupted_then_resumed(run, loss_fn, fail_at, tmp_path / str(n))
        _same_merges(resumed, merges)
        # it went on where it stopped: at most one distance step's descent redone (or one iteration of the d = 0
        # descent's halves, which save inside)
        assert calls <= total - fail_at + 1 + (RULE.max_iter * RULE.line_search_evals + 1)


def test_an_interrupted_certification_resumes_where_it_stopped(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    merges, loss_fn, certified = toy

    def run(loss):
        return certify_maxima(merges, loss, BUDGET, RULE)

    counted = CountingLoss(loss_fn)
    run(counted)
    total = counted.calls
    assert max(len(state.refined) for state in certified) >= 2  # rounds to resume between
    for fail_at in (total // 4, 3 * total // 4):
        resumed, calls = _interrupted_then_resumed(run, loss_fn, fail_at, tmp_path / str(fail_at))
        # on from where it stopped: at most an iteration of each of a round's two descents redone, and the round's
        # losses at their ends
        assert calls <= total - fail_at + 1 + 2 * (RULE.line_search_evals + 1) + 2 * len(merges)
        _same_maxima(resumed, certified)


def _same_maxima(resumed, certified):
    for x, y in zip(resumed, certified):
        assert torch.equal(x.losses, y.losses)
        assert dataclasses.replace(x, losses=None, points={}) == dataclasses.replace(y, losses=None, points={})
        assert x.points.keys() == y.points.keys()
        assert all(torch.equal(x.points[k].flat(), y.points[k].flat()) for k in x.points)
