"""Batched descent until convergence (losstopo.descent): minima known in closed form, the stopping
rule, and independence of the problems that share a batch."""

import pytest
import torch

from losstopo.descent import Convergence, descend_batch, value_and_grad
from losstopo.errors import LosstopoError

F64 = torch.float64


def quadratics(n_problems, dim, seed=0):
    """f_b(x) = ½ (x - c_b)ᵀ A_b (x - c_b) with A_b SPD of condition ~100: minimum c_b, value 0."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_problems, dim, dim, generator=generator, dtype=F64))
    eigen = torch.logspace(0, 2, dim, dtype=F64).expand(n_problems, dim)
    a = q @ torch.diag_embed(eigen) @ q.transpose(1, 2)
    centres = torch.randn(n_problems, dim, generator=generator, dtype=F64)
    evaluated = []

    def objective(rows, index):
        evaluated.append(index.tolist())
        d = rows - centres[index]
        return 0.5 * torch.einsum("ni,nij,nj->n", d, a[index], d)

    return objective, centres, evaluated


def rosenbrock(rows, index):
    x, y = rows[:, 0], rows[:, 1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def test_lbfgs_finds_every_quadratics_minimum():
    objective, centres, _ = quadratics(5, 8)
    result = descend_batch(objective, torch.zeros(5, 8, dtype=F64), Convergence(max_iter=200, grad_tol=1e-10))
    torch.testing.assert_close(result.x, centres, rtol=0, atol=1e-9)
    assert all(result.converged) and max(result.iterations) < 60  # n = 8: L-BFGS is near-exact within ~2n steps
    assert float(result.loss.max()) < 1e-18


def test_lbfgs_solves_rosenbrock_from_the_classic_start():
    start = torch.tensor([[-1.2, 1.0], [0.0, 0.0]], dtype=F64)
    result = descend_batch(rosenbrock, start, Convergence(max_iter=500, grad_tol=1e-10, rel_tol=0.0))
    torch.testing.assert_close(result.x, torch.ones(2, 2, dtype=F64), rtol=0, atol=1e-8)
    assert all(result.converged)


def test_a_problem_descends_the_same_alone_or_in_a_batch():
    objective, centres, _ = quadratics(4, 6, seed=3)
    start = torch.randn(4, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    rule = Convergence(max_iter=40, grad_tol=1e-8, rel_tol=1e-12, history_size=5)
    together = descend_batch(objective, start, rule)
    for b in range(4):
        alone = descend_batch(lambda rows, index: objective(rows, index + b), start[b:b + 1], rule)
        assert alone.iterations[0] == together.iterations[b] and alone.converged[0] == together.converged[b]
        torch.testing.assert_close(alone.x[0], together.x[b], rtol=0, atol=1e-12)


def test_each_problem_stops_by_its_own_rule_and_is_not_evaluated_after():
    objective, centres, evaluated = quadratics(3, 4, seed=1)
    start = centres.clone()
    start[1] += 1.0  # problems 0 and 2 start at their minima: |∇L| = 0 stops them before any step
    result = descend_batch(objective, start, Convergence(max_iter=100, grad_tol=1e-9))
    assert result.iterations[0] == result.iterations[2] == 0 and result.converged[0] and result.converged[2]
    assert result.iterations[1] > 0 and result.converged[1]
    assert all(index == [1] for index in evaluated[1:])  # after the first evaluation of all three, only problem 1
    assert torch.equal(result.x[0], centres[0]) and torch.equal(result.x[2], centres[2])


def test_max_iter_ends_unconverged_and_relative_change_ends_converged():
    capped = descend_batch(rosenbrock, torch.tensor([[-1.2, 1.0]], dtype=F64),
                           Convergence(max_iter=3, grad_tol=0.0, rel_tol=0.0))
    assert capped.iterations == [3] and capped.converged == [False]
    loose = descend_batch(rosenbrock, torch.tensor([[-1.2, 1.0]], dtype=F64),
                          Convergence(max_iter=500, grad_tol=0.0, rel_tol=0.5))
    assert loose.converged == [True] and 0 < loose.iterations[0] < 500  # stopped by |ΔL| <= 0.5·|L|


def test_gradient_descent_step_is_x_minus_lr_times_gradient():
    objective, centres, _ = quadratics(2, 3, seed=2)
    start = torch.zeros(2, 3, dtype=F64)
    _, grad = value_and_grad(objective, start, torch.arange(2))
    one_step = descend_batch(objective, start, Convergence(method="gd", lr=0.003, max_iter=1, grad_tol=0.0))
    torch.testing.assert_close(one_step.x, start - 0.003 * grad, rtol=0, atol=1e-15)
    many = descend_batch(objective, start, Convergence(method="gd", lr=0.009, max_iter=20000, grad_tol=1e-9,
                                                       rel_tol=0.0))  # lr < 2 / λ_max = 0.02
    torch.testing.assert_close(many.x, centres, rtol=0, atol=1e-8)


def test_adam_first_step_moves_every_coordinate_by_lr():
    objective, centres, _ = quadratics(2, 3, seed=5)
    start = torch.zeros(2, 3, dtype=F64)
    _, grad = value_and_grad(objective, start, torch.arange(2))
    one_step = descend_batch(objective, start, Convergence(method="adam", lr=0.01, max_iter=1, grad_tol=0.0))
    # bias-corrected first moment g, second moment g²: the step is lr·g/(|g| + eps) ≈ lr·sign(g)
    torch.testing.assert_close(one_step.x, start - 0.01 * grad.sign(), rtol=0, atol=1e-8)


def test_unknown_method_and_bad_settings_are_refused():
    with pytest.raises(LosstopoError, match="unknown descent method"):
        Convergence(method="newton")
    with pytest.raises(LosstopoError):
        Convergence(line_search_evals=0)


def test_a_stalled_problem_stops_after_its_steepest_descent_search_fails():
    start = torch.tensor([[0.5, -0.25]], dtype=F64)
    evaluations = []

    def cliff(rows, index):  # slope 1 everywhere, but every point other than the start costs 10 more
        evaluations.append(rows.detach().clone())
        return rows.sum(1) + 10.0 * (rows != start).any(1).to(F64)

    result = descend_batch(cliff, start, Convergence(max_iter=50, grad_tol=0.0, line_search_evals=4))
    assert result.iterations == [1] and result.converged == [True]  # no step lowers the loss: stalled
    assert torch.equal(result.x, start) and len(evaluations) == 1 + 4


def bfgs_inverse_hessian(pairs, gamma, dim):
    """H from γI by the BFGS inverse update for each (s, y), oldest first (Nocedal & Wright eq. 6.17)."""
    h = gamma * torch.eye(dim, dtype=F64)
    for s, y in pairs:
        rho, left = 1 / (s @ y), torch.eye(dim, dtype=F64) - torch.outer(s, y) / (s @ y)
        h = left @ h @ left.T + rho * torch.outer(s, s)
    return h


@pytest.mark.parametrize("iterations", [3, 9])  # the ring partly filled; wrapped round
def test_lbfgs_direction_is_minus_the_bfgs_matrix_of_the_pairs_each_problem_kept(iterations):
    """The shared history ring against a dense BFGS matrix per problem: pairs kept in the last m
    iterations only, none after a rejected curvature, all forgotten after a failed line search."""
    from losstopo.descent import _LBFGSSteps

    n, dim, m = 3, 6, 4
    generator = torch.Generator().manual_seed(7)
    steps = _LBFGSSteps(torch.zeros(n, dim, dtype=F64), Convergence(history_size=m))
    kept = [[] for _ in range(n)]  # (iteration, s, y) each problem still remembers
    gamma = [1.0] * n
    for iteration in range(iterations):
        s = torch.randn(n, dim, generator=generator, dtype=F64)
        y = s + 0.4 * torch.randn(n, dim, generator=generator, dtype=F64)
        if iteration == 7:
            y[2] = -s[2]  # negative curvature: problem 2 stores nothing this iteration
        accepted = torch.tensor([True, iteration != 5, True])  # problem 1's search fails once
        index = torch.arange(n) if iteration != 8 else torch.tensor([0, 2])  # problem 1 not in the last step
        steps._remember(index, accepted[index], s[index], y[index])
        for b in index.tolist():
            if not accepted[b]:
                kept[b], gamma[b] = [], 1.0
            elif s[b] @ y[b] > 0:
                kept[b].append((iteration, s[b], y[b]))
                gamma[b] = float(s[b] @ y[b] / (y[b] @ y[b]))
    grad = torch.randn(n, dim, generator=generator, dtype=F64)
    window = [[(s, y) for i, s, y in kept[b] if i >= iterations - m] for b in range(n)]
    expected = torch.stack([-bfgs_inverse_hessian(window[b], gamma[b], dim) @ grad[b] for b in range(n)])
    torch.testing.assert_close(steps._direction(torch.arange(n), grad), expected, rtol=1e-10, atol=1e-12)
    subset = torch.tensor([0, 2])
    torch.testing.assert_close(steps._direction(subset, grad[subset]), expected[subset], rtol=1e-10, atol=1e-12)
    # the cases above all fall in the last m of 9 iterations: 4, 2 and 3 pairs remembered
    assert [len(w) for w in window] == ([3, 3, 3] if iterations == 3 else [4, 2, 3])


def test_a_window_judges_the_progress_of_several_iterations():
    """Slow gradient descent on |x|^2: each iteration lowers the loss by 0.4%, ten by 3.9%."""
    def objective(rows, index):
        return (rows ** 2).sum(1)

    start = torch.ones(2, 3, dtype=F64)
    slow = dict(method="gd", lr=1e-3, grad_tol=0.0, max_iter=50)
    one = descend_batch(objective, start, Convergence(rel_tol=5e-3, **slow))
    assert one.iterations == [1, 1] and all(one.converged)  # one iteration cannot see the slow progress
    ten = descend_batch(objective, start, Convergence(rel_tol=5e-3, window=10, **slow))
    assert ten.iterations == [50, 50] and not any(ten.converged)
    enough = descend_batch(objective, start, Convergence(rel_tol=0.05, window=10, **slow))
    assert enough.iterations == [10, 10] and all(enough.converged)
    with pytest.raises(LosstopoError):
        Convergence(window=0)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("method, lr, abs_tol, max_iter", [("gd", 0.01, 1e-2, 150), ("adam", 0.1, 1e-3, 150),
                                                           ("lbfgs", 1.0, 1e-5, 60)])
def test_an_interrupted_descent_resumes_at_its_last_saved_iteration_and_ends_bitwise_as_the_whole(
        method, lr, abs_tol, max_iter, tmp_path, monkeypatch):
    from losstopo.resume import LoopState, job_scratch

    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")  # a save before every iteration
    objective, _, evaluated = quadratics(3, 6, seed=5)
    start = torch.randn(3, 6, generator=torch.Generator().manual_seed(6), dtype=F64)
    rule = Convergence(method=method, lr=lr, max_iter=max_iter, grad_tol=1e-12, rel_tol=0.0, abs_tol=abs_tol,
                       history_size=4, window=3)
    whole = descend_batch(objective, start, rule)
    assert any(it < max_iter for it in whole.iterations)  # the window rule stops problems: its losses must carry over
    total = len(evaluated)
    per_iteration = rule.line_search_evals if method == "lbfgs" else 1

    def run(fail_at):
        evaluated.clear()

        def failing(rows, index):
            if len(evaluated) + 1 == fail_at:
                raise Interrupted
            return objective(rows, index)

        return descend_batch(failing, start, rule, LoopState("a descent"))

    for k, fail_at in enumerate(range(2, total, max(total // 12, 1))):
        with job_scratch(tmp_path / str(k)), pytest.raises(Interrupted):
            run(fail_at)
        with job_scratch(tmp_path / str(k)):  # the job again
            resumed = run(None)
        assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.loss, whole.loss)
        assert (resumed.iterations, resumed.converged) == (whole.iterations, whole.converged)
        # it went on from the iteration that was interrupted: at most that iteration's evaluations redone
        assert len(evaluated) <= total - (fail_at - 1) + per_iteration
    with job_scratch(tmp_path / "other"), pytest.raises(Interrupted):
        run(total // 2)
    evaluated.clear()
    with job_scratch(tmp_path / "other"):  # a state saved for another start is not used
        other = descend_batch(objective, start + 1, rule, LoopState("a descent"))
    assert len(evaluated) > total // 2 and not torch.equal(other.x, whole.x)
