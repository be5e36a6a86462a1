"""Descent "until convergence" of many independent problems at once.

Problem ``b`` minimises ``f_b`` over row ``b`` of a ``(B, D)`` tensor. The objective evaluates any
subset of rows in one call (``objective(rows, index) -> (n,)`` losses, ``index`` naming the
problems), so the B problems share every forward and backward pass instead of launching their
own: the permutation paths of all teachers of one width, or of all pairs of the toy, descend
together. Each problem stops on its own by the rule of :class:`Convergence`; a stopped problem
drops out of the batch and is no longer evaluated.

``lbfgs`` is L-BFGS (its compact matrix form) with a strong-Wolfe line search, run for every
problem of the batch in the same tensor operations; ``gd`` and ``adam`` are the plain steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from losstopo.errors import LosstopoError
from losstopo.io import tensor_digest
from losstopo.resume import LoopState

BatchObjective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

METHODS = ("gd", "adam", "lbfgs")
ARMIJO, WOLFE = 1e-4, 0.9  # the line search's sufficient-decrease and curvature constants (N&W's c1, c2)
EXTRAPOLATE = 4.0  # step growth while the loss still falls steeply along the direction
CURVATURE_FLOOR = 1e-10  # a pair (s, y) with y·s at or below this is not stored (as in torch.optim.LBFGS)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


@dataclass(frozen=True)
class Convergence:
    """The rule for "gradient descent until convergence" at one fixed distance d (§4.1, Fig. 2).

    Each iteration is one step of ``method``: ``"gd"`` (full-batch gradient descent with step
    ``lr``; the paper's choice), ``"adam"`` (Adam, ``lr``) or ``"lbfgs"`` (one L-BFGS step over the
    last ``history_size`` curvature pairs with a strong-Wolfe line search from the step ``lr`` --
    ``lr·min(1, 1/|g|₁)`` while no pair is stored -- of at most ``line_search_evals`` evaluations,
    as ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``; a problem whose search fails stays put, forgets its
    pairs and retries from steepest descent; one that fails along steepest descent has stalled,
    and its unchanged loss stops it by the relative rule below). Before each iteration the loss L
    and the gradient norm |∇L| are read at the current point; descent stops

    * converged, as soon as ``|∇L| <= grad_tol``, or once the last ``window`` iterations changed the loss
      by ``|L_prev - L| <= rel_tol * |L_prev| + abs_tol``, ``L_prev`` the loss ``window`` iterations ago (so a
      point at exactly zero loss stops at once; ``abs_tol`` stops the chase of relative progress on losses
      that are already ~0; a ``window`` > 1 judges the progress of several iterations, which one L-BFGS
      iteration of a float32 loss cannot resolve);
    * not converged, after ``max_iter`` iterations (reported in ``DescentResult.converged``).

    ``final_max_iter`` (None: the last descent is a step like the others) is the budget of a path's last
    descent, at the permutation point (d = 0), where the claims read the loss, the accuracy and the Hessian:
    one problem, so a budget many times a distance step's costs little. It runs in two halves without the
    relative and absolute rules (only a vanishing gradient or a stall stops it early), and the loss after the
    first half is kept: the second half's change is the point's measured convergence.
    """

    method: str = "lbfgs"
    lr: float = 1.0
    max_iter: int = 200
    grad_tol: float = 1e-9
    rel_tol: float = 1e-9
    abs_tol: float = 0.0
    history_size: int = 50
    line_search_evals: int = 10
    window: int = 1
    final_max_iter: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise LosstopoError(f"unknown descent method {self.method!r}; use one of {', '.join(METHODS)}")
        final_negative = self.final_max_iter is not None and self.final_max_iter < 0
        if self.max_iter < 0 or final_negative or self.history_size < 1 or self.line_search_evals < 1 or self.window < 1:
            raise LosstopoError("descent needs max_iter >= 0, final_max_iter >= 0, history_size >= 1, "
                                "line_search_evals >= 1 and window >= 1")


@dataclass
class DescentResult:
    x: torch.Tensor  # (B, D) end points
    loss: torch.Tensor  # (B,) losses there
    iterations: list[int]  # iterations each problem ran before its rule stopped it (max_iter if never)
    converged: list[bool]


def final_half_rule(rule: Convergence) -> Convergence:
    """The rule of each half of a path's last descent (see ``Convergence.final_max_iter``)."""
    return dataclasses.replace(rule, max_iter=rule.final_max_iter // 2, rel_tol=0.0, abs_tol=0.0, window=1,
                               final_max_iter=None)


def halved(rule: Convergence) -> Convergence:
    """``rule`` with half its iteration caps: the budget a convergence check compares against."""
    final = None if rule.final_max_iter is None else rule.final_max_iter // 2
    return dataclasses.replace(rule, max_iter=rule.max_iter // 2, final_max_iter=final)


def value_and_grad(objective: BatchObjective, rows: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses (n,) of ``rows`` (n, D) and their gradients (n, D): the problems are independent, so the
    gradient of the summed losses is each row's own."""
    with torch.enable_grad():
        rows = rows.detach().requires_grad_(True)
        loss = objective(rows, index)
        (grad,) = torch.autograd.grad(loss.sum(), rows)
    return loss.detach(), grad.contiguous()  # a sum's gradient can come back as an expanded view


class _Steps:
    """One method's iteration for a subset of the problems; keeps each problem's state by its index."""

    STATE: tuple[str, ...] = ()  # the attributes that carry the iteration on (saved with an interrupted descent)

    def __init__(self, x: torch.Tensor, rule: Convergence):
        self.rule = rule

    def state(self) -> dict:
        return {name: getattr(self, name) for name in self.STATE}

    def load(self, state: dict, device: torch.device) -> None:
        for name in self.STATE:
            value = state[name]
            setattr(self, name, value.to(device) if isinstance(value, torch.Tensor) else value)

    def step(self, objective: BatchObjective, index: torch.Tensor, x: torch.Tensor, loss: torch.Tensor,
             grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new points, their losses and gradients, and which problems stayed put only to retry
        (their unchanged loss must not count as convergence)."""
        raise NotImplementedError


class _GradientSteps(_Steps):
    def step(self, objective, index, x, loss, grad):
        moved = x - self.rule.lr * grad
        return (moved, *value_and_grad(objective, moved, index), torch.zeros_like(loss, dtype=torch.bool))


class _AdamSteps(_Steps):
    STATE = ("first", "second", "count")

    def __init__(self, x, rule):
        super().__init__(x, rule)
        self.first, self.second = torch.zeros_like(x), torch.zeros_like(x)
        self.count = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def step(self, objective, index, x, loss, grad):
        (beta1, beta2), count = ADAM_BETAS, self.count[index] + 1
        self.count[index] = count
        first = self.first[index].mul_(beta1).add_(grad, alpha=1 - beta1)
        second = self.second[index].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.first[index], self.second[index] = first, second
        corrected = (second / (1 - beta2 ** count)[:, None]).sqrt_().add_(ADAM_EPS)
        moved = x - (self.rule.lr / (1 - beta1 ** count))[:, None] * first / corrected
        return (moved, *value_and_grad(objective, moved, index), torch.zeros_like(loss, dtype=torch.bool))


class _LBFGSSteps(_Steps):
    """L-BFGS with one history ring shared by the batch: a slot holds every problem's pair of that
    iteration, or nothing for a problem that stored none (ρ = 0: the pair is left out).

    The direction uses the compact form of the L-BFGS matrix (Byrd, Nocedal & Schnabel 1994; Nocedal &
    Wright eq. 7.24) instead of the two-loop recursion: the same H·g in a fixed, small number of batched
    tensor operations, where the recursion launches a dozen per stored pair (~600 kernels an iteration
    at 50 pairs, the launch-bound part of the permutation paths on a GPU). The inner products SᵀY and
    YᵀY are kept up to date as pairs arrive, one slot at a time."""

    STATE = ("s", "y", "rho", "sy", "yy", "gamma", "next_slot", "filled")

    def __init__(self, x, rule):
        super().__init__(x, rule)
        size, batch = rule.history_size, x.shape[0]
        self.s = x.new_zeros(batch, size, x.shape[1])  # (B, m, D): each problem's pairs contiguous
        self.y = x.new_zeros(batch, size, x.shape[1])
        self.rho = x.new_zeros(size, batch)  # 1 / sᵀy of a stored pair, 0 where none
        self.sy = x.new_zeros(batch, size, size)  # sy[b, i, j] = s_iᵀ y_j of problem b (slot order)
        self.yy = x.new_zeros(batch, size, size)
        self.gamma = x.new_ones(batch)
        self.next_slot, self.filled = 0, 0  # slots 0..filled-1 hold pairs (the ring wraps once full)

    def _direction(self, index: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """-H·g with H = γI + [S γY] [[R⁻ᵀ(Dg + γYᵀY)R⁻¹, -R⁻ᵀ], [-R⁻¹, 0]] [Sᵀ; γYᵀ] over each
        problem's stored pairs, oldest first (R: the upper triangle of SᵀY, Dg its diagonal). A slot
        without a pair gets R's diagonal 1 and zeros elsewhere, which leaves it out exactly."""
        n = self.filled
        # every problem's rows take part (a stopped one with g = 0): no copy of the (B, m, D) history
        everyone = len(index) == len(self.gamma)
        g = grad if everyone else grad.new_zeros(len(self.gamma), grad.shape[1]).index_copy_(0, index, grad)
        gamma = self.gamma[:, None]  # (B, 1)
        if n == 0:
            return -(gamma * g if everyone else (gamma * g)[index])
        s, y = self.s[:, :n], self.y[:, :n]  # the filled slots: views
        start = self.next_slot if n == self.rule.history_size else 0
        order = (torch.arange(n, device=grad.device) + start) % n  # slots, oldest first
        stored = (self.rho[order] != 0).T.to(grad.dtype)  # (B, n) chronological
        both = stored[:, :, None] * stored[:, None, :]
        sy = self.sy[:, order][:, :, order] * both
        yy = self.yy[:, order][:, :, order] * both
        r = sy.triu() + torch.diag_embed(1 - stored)
        s_g = (s @ g[:, :, None])[:, order] * stored[:, :, None]  # Sᵀg (B, n, 1)
        y_g = (y @ g[:, :, None])[:, order] * stored[:, :, None]
        u = torch.linalg.solve_triangular(r, s_g, upper=True)  # R⁻¹Sᵀg
        inner = sy.diagonal(dim1=1, dim2=2)[:, :, None] * u + gamma[:, :, None] * (yy @ u - y_g)
        top = torch.linalg.solve_triangular(r.transpose(1, 2), inner, upper=False)[:, :, 0]
        coefficients_s, coefficients_y = torch.empty_like(top), torch.empty_like(top)
        coefficients_s[:, order], coefficients_y[:, order] = top, -gamma * u[:, :, 0]  # back to slot order
        hg = gamma * g + (coefficients_s[:, None, :] @ s)[:, 0] + (coefficients_y[:, None, :] @ y)[:, 0]
        return -(hg if everyone else hg[index])

    def step(self, objective, index, x, loss, grad):
        direction = self._direction(index, grad)
        slope = (grad * direction).sum(1)
        uphill = slope >= 0  # rounding in a worn history: fall back on steepest descent
        direction = torch.where(uphill[:, None], -grad, direction)
        slope = torch.where(uphill, -(grad * grad).sum(1), slope)
        fresh = (self.rho[:, index] == 0).all(0) | uphill
        step = self.rule.lr * torch.where(fresh, (1 / grad.abs().sum(1)).clamp(max=1.0), torch.ones_like(slope))

        new_x, new_loss, new_grad, accepted = _wolfe_search(objective, index, x, loss, grad, direction, slope, step,
                                                            self.rule.line_search_evals)
        self._remember(index, accepted, new_x - x, new_grad - grad)
        # a failed search along an L-BFGS direction is retried from steepest descent; one along
        # steepest descent means no step size it tried lowers the loss: stalled
        return new_x, new_loss, new_grad, ~accepted & ~fresh

    def _remember(self, index: torch.Tensor, accepted: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        curvature = (s * y).sum(1)
        keep = accepted & (curvature > CURVATURE_FLOOR)
        k = self.next_slot
        self.s[:, k].zero_()
        self.y[:, k].zero_()
        self.rho[k].zero_()
        self.s[index, k] = torch.where(keep[:, None], s, 0.0)
        self.y[index, k] = torch.where(keep[:, None], y, 0.0)
        self.rho[k, index] = torch.where(keep, 1 / curvature.where(keep, 1.0), 0.0)
        # slot k's row and column of SᵀY and YᵀY over the filled slots (zeros for a problem without a pair)
        n = self.filled = min(self.filled + 1, self.rule.history_size)
        with_y = self.y[:, :n] @ torch.stack([self.s[:, k], self.y[:, k]], 2)  # (B, n, 2): y_jᵀs_k, y_jᵀy_k
        self.sy[:, k, :n], self.yy[:, k, :n] = with_y[..., 0], with_y[..., 1]
        self.yy[:, :n, k] = with_y[..., 1]
        self.sy[:, :n, k] = (self.s[:, :n] @ self.y[:, k, :, None])[..., 0]
        self.gamma[index] = torch.where(keep, curvature / (y * y).sum(1).where(keep, 1.0), self.gamma[index])
        failed = index[~accepted]  # start again from steepest descent, unscaled
        self.rho[:, failed], self.gamma[failed] = 0.0, 1.0
        self.next_slot = (k + 1) % self.rule.history_size


def _cubic_minimum(t1, f1, d1, t2, f2, d2):
    """The minimiser of the cubic through (t, f, f') at t1 and t2, clamped to the interval's middle
    80% (Nocedal & Wright eq. 3.59; the safeguard keeps the bracket shrinking); its midpoint where the
    cubic has no minimum or a loss is not finite."""
    low, high = torch.minimum(t1, t2), torch.maximum(t1, t2)
    a = d1 + d2 - 3 * (f1 - f2) / (t1 - t2)
    root = (a * a - d1 * d2).clamp(min=0).sqrt()
    cubic = t2 - (t2 - t1) * (d2 + root - a) / (d2 - d1 + 2 * root)
    usable = torch.isfinite(cubic) & (a * a - d1 * d2 >= 0)
    margin = 0.1 * (high - low)
    return torch.where(usable, cubic.clamp(min=low + margin, max=high - margin), (low + high) / 2)


def _wolfe_search(objective: BatchObjective, index: torch.Tensor, x: torch.Tensor, loss: torch.Tensor,
                  grad: torch.Tensor, direction: torch.Tensor, slope: torch.Tensor, step: torch.Tensor,
                  evaluations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A strong-Wolfe line search along ``direction`` for every problem at once (Nocedal & Wright, Alg.
    3.5-3.6, as in ``torch.optim.LBFGS``): each problem tries ``step``, extrapolates (x4) while the loss
    keeps falling steeply, then zooms into the bracket by safeguarded cubic interpolation, and stops at a
    step with sufficient decrease (Armijo) and a flattened slope (|φ'| <= 0.9 |φ'(0)|). Out of
    evaluations, it keeps the lowest sufficient-decrease step found. Returns the new points, losses,
    gradients and which problems moved."""
    lo_t, lo_loss, lo_slope = torch.zeros_like(loss), loss.clone(), slope.clone()
    hi_t, hi_loss, hi_slope = torch.full_like(loss, math.inf), loss.clone(), slope.clone()
    lo_x, lo_grad = x.clone(), grad.clone()
    t, pending = step.clone(), torch.arange(len(index), device=x.device)
    for _ in range(evaluations):
        trial = x[pending] + t[pending, None] * direction[pending]
        trial_loss, trial_grad = value_and_grad(objective, trial, index[pending])
        trial_slope = (trial_grad * direction[pending]).sum(1)
        sufficient = (torch.isfinite(trial_loss) & (trial_loss < lo_loss[pending])
                      & (trial_loss <= loss[pending] + ARMIJO * t[pending] * slope[pending]))
        flat = trial_slope.abs() <= -WOLFE * slope[pending]
        trial_t, lo, hi = t[pending], lo_t[pending], hi_t[pending]
        past_minimum = sufficient & torch.where(hi.isinf(), trial_slope >= 0, trial_slope * (hi - lo) >= 0)
        # the new far end of the bracket: this step if it was not good enough, the old near end if the
        # minimum now lies between it and this step
        for far, near, this in ((hi_t, lo_t, trial_t), (hi_loss, lo_loss, trial_loss),
                                (hi_slope, lo_slope, trial_slope)):
            far[pending] = torch.where(~sufficient, this, torch.where(past_minimum, near[pending], far[pending]))
        better = pending[sufficient]
        lo_t[better], lo_loss[better], lo_slope[better] = t[better], trial_loss[sufficient], trial_slope[sufficient]
        lo_x[better], lo_grad[better] = trial[sufficient], trial_grad[sufficient]
        pending = pending[~(sufficient & flat)]
        if len(pending) == 0:
            break
        p = pending
        zoomed = _cubic_minimum(lo_t[p], lo_loss[p], lo_slope[p], hi_t[p].clamp(max=torch.finfo(x.dtype).max),
                                hi_loss[p], hi_slope[p])
        t[p] = torch.where(hi_t[p].isinf(), EXTRAPOLATE * lo_t[p], zoomed)
    return lo_x, lo_loss, lo_grad, lo_t > 0


STEPS: dict[str, type[_Steps]] = {"gd": _GradientSteps, "adam": _AdamSteps, "lbfgs": _LBFGSSteps}


def descend_batch(objective: BatchObjective, x0: torch.Tensor, rule: Convergence = Convergence(),
                  state: LoopState | None = None) -> DescentResult:
    """Minimise every problem of ``objective`` from its row of ``x0`` (B, D) until ``rule`` stops it.

    The loss and gradient the rule reads at an iteration are those its step starts from (one
    evaluation per gd/adam iteration); a problem the rule stops takes no further step. With ``state`` (a
    long descent inside a job) the descent saves its iteration there when a save is due, and a rerun from the
    same ``x0`` by the same rule continues from the saved iteration to the same end.
    """
    x = x0.detach().clone()
    everyone = torch.arange(x.shape[0], device=x.device)
    steps = STEPS[rule.method](x, rule)
    iterations, converged = [rule.max_iter] * x.shape[0], [False] * x.shape[0]
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    earlier: deque[torch.Tensor] = deque(maxlen=rule.window)  # the losses of the last `window` iterations
    if state is not None:  # this descent's own: from this start, by this rule
        state = state.narrowed(f"descent from {tensor_digest(x0)} by {rule}")
    saved = None if state is None else state.restore()
    if saved is None:
        first = 0
        loss, grad = value_and_grad(objective, x, everyone)
    else:
        first, iterations, converged = saved["iteration"], saved["iterations"], saved["converged"]
        x, loss, grad, active = (saved[name].to(x.device) for name in ("x", "loss", "grad", "active"))
        earlier.extend(previous.to(x.device) for previous in saved["earlier"])
        steps.load(saved["steps"], x.device)
    for iteration in range(first, rule.max_iter):
        if state is not None and iteration > first and state.save_due():
            state.save({"iteration": iteration, "iterations": iterations, "converged": converged, "x": x, "loss": loss,
                        "grad": grad, "active": active, "earlier": list(earlier), "steps": steps.state()})
        stop = torch.linalg.vector_norm(grad, dim=1) <= rule.grad_tol
        if len(earlier) == rule.window:
            reference = earlier[0]
            stop |= (reference - loss).abs() <= rule.rel_tol * reference.abs() + rule.abs_tol
        for b in (stop & active).nonzero().flatten().tolist():
            iterations[b], converged[b] = iteration, True
        active &= ~stop
        index = active.nonzero().flatten()
        if len(index) == 0:
            break
        previous = loss.clone()
        earlier.append(previous)
        x[index], loss[index], grad[index], retry = steps.step(objective, index, x[index], loss[index], grad[index])
        previous[index[retry]] = math.nan  # stayed put to retry: no progress to judge from this iteration
    else:
        final = active & (torch.linalg.vector_norm(grad, dim=1) <= rule.grad_tol)
        for b in final.nonzero().flatten().tolist():
            converged[b] = True
    return DescentResult(x, loss, iterations, converged)
