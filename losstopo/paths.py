"""Low-loss paths between minima: the orthogonal-gradient polyline of Algorithm 3 (barcodes paper).

Every function here takes ``loss_fn(thetas) -> losses``: a ``(k, d)`` tensor of flat parameter
vectors to ``(k,)`` losses (a network plus data built by :mod:`losstopo.stacked`, or an analytic
function on R^2). If ``loss_fn`` has a ``minibatch(generator)`` method, optimisation steps use
the stochastic loss it returns; the final dense evaluation always uses ``loss_fn`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from losstopo.errors import LosstopoError, TrainingDiverged

LossFn = Callable[[torch.Tensor], torch.Tensor]
PAPER_ALPHAS = (0.2, 0.4, 0.6, 0.8)  # section 3.2: evaluation between optimised points
MAX_TOLERANCE = 1e-4  # a path maximum is refined until it moves by < this fraction of its loss range
MAX_REFINEMENTS = 40  # bracket halvings at most (the bracket shrinks by 2**-40 of a segment)
CONVERGENCE_WINDOW = 0.2  # a path has converged when its last 20% of steps move its maximum by < tol
SAMPLES = ("points", "segments")  # where each step takes its gradients (optimize_paths)
STEP_RULES = ("sgd", "normalized")
DIVERGED_FACTOR = 2.0  # a path whose maximum ends above this x its straight segment's maximum has diverged
SECOND_MOMENT_DECAY = 0.999  # "normalized" steps: decay of each point's mean squared step direction


class PathsDiverged(LosstopoError):
    """A path's loss became NaN or infinite during optimisation; ``paths`` holds the indices of those paths."""

    def __init__(self, paths: list[int], step: int):
        self.paths, self.step = paths, step
        super().__init__(f"path(s) {paths} diverged (non-finite loss) at step {step}: lower the learning rate "
                         f"or use step_rule 'normalized'")


def convergence_checkpoint(steps: int, window: float = CONVERGENCE_WINDOW) -> int:
    return int(round(steps * (1 - window)))


@dataclass
class PathResult:
    points: torch.Tensor  # (n, d); rows 0 and n-1 are the two minima
    max_loss: float  # maximum of the dense evaluation
    positions: np.ndarray  # (m,) position along the polyline in point-index units (0 .. n-1)
    dense_losses: np.ndarray  # (m,) loss at each position
    history: list[float] = field(default_factory=list)  # max interior loss per recorded step
    max_at_steps: dict[int, float] = field(default_factory=dict)  # dense maximum after so many steps
    orthogonal_grad_norm: float = float("nan")  # |orthogonal gradient| at the highest interior point

    @property
    def argmax_position(self) -> float:
        return float(self.positions[int(np.argmax(self.dense_losses))])

    def relative_change(self, window: float = CONVERGENCE_WINDOW) -> float:
        """|max(T) - max((1 - window) T)| / |max(T)|: how much the last ``window`` of the steps still
        moved the path maximum (NaN when that step was not checkpointed)."""
        steps = max(self.max_at_steps, default=0)
        earlier = self.max_at_steps.get(convergence_checkpoint(steps, window))
        if not steps or earlier is None:
            return float("nan")
        return float(maximum_change(self.max_loss, earlier))


def maximum_change(final, earlier):
    """|final - earlier| / |final| (elementwise on arrays): how much the last steps moved a maximum."""
    return np.abs(np.subtract(final, earlier)) / np.maximum(np.abs(final), 1e-12)


def path_converged(change: float, max_loss: float, endpoint_loss: float, tolerance: float,
                   absolute: float = 0.0) -> bool:
    """A path maximum is converged when more optimisation moved it by <= ``tolerance`` (relative
    ``change``) or by <= ``absolute`` (in loss units), or when it is within ``tolerance`` (relative) plus
    ``absolute`` of its floor, the higher endpoint's loss: no path between the two minima can go lower, so
    a maximum at the floor is the minimax value itself. ``absolute`` is the loss resolution below which
    two values are not told apart (e.g. the minima's own convergence resolution): a relative rule alone
    cannot be met by maxima that are themselves ~0."""
    moved = change * abs(max_loss)
    return bool(change <= tolerance or moved <= absolute or at_floor(max_loss, endpoint_loss, tolerance, absolute))


def at_floor(max_loss: float, endpoint_loss: float, tolerance: float, absolute: float = 0.0) -> bool:
    """Whether a path maximum lies within ``tolerance`` (relative) plus ``absolute`` of its floor, the higher
    endpoint's loss: no path between the two minima can go lower."""
    return bool(max_loss <= (1 + tolerance) * endpoint_loss + absolute)


def convergence_rule_words(tolerance: float, absolute: float, floor: str) -> str:
    """:func:`path_converged` in words, ``floor`` naming the loss no path can go below."""
    change = f"|max(T) - max({1 - CONVERGENCE_WINDOW:g} T)|"
    return (f"{change} / max(T) <= {tolerance:g}, or {change} <= {absolute:g}, "
            f"or max(T) <= (1 + {tolerance:g}) x {floor} + {absolute:g}")


def straight_path(theta_a: torch.Tensor, theta_b: torch.Tensor, n_points: int) -> torch.Tensor:
    """theta_a, theta_b: (..., d) -> (..., n_points, d), equally spaced on the segment."""
    t = torch.linspace(0, 1, n_points, dtype=theta_a.dtype, device=theta_a.device).view(-1, 1)
    return theta_a.unsqueeze(-2) * (1 - t) + theta_b.unsqueeze(-2) * t


def orthogonal_step(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Algorithm 3's step direction for points ``centre`` (m, d) with neighbours ``left``, ``right`` (m, d).

    The gradient minus the mean of its projections on the unit directions from the left neighbour
    and to the right neighbour.
    """
    # (g . u) u with u = v / |v| is (g . v) / |v|^2 v: four passes over (m, d) fewer than normalising v
    to_left, to_right = centre - left, right - centre
    on_left = _row_dot(grads, to_left) / _row_dot(to_left, to_left).clamp(min=1e-24)
    on_right = _row_dot(grads, to_right) / _row_dot(to_right, to_right).clamp(min=1e-24)
    return torch.addcmul(grads, to_left, on_left, value=-0.5).addcmul_(to_right, on_right, value=-0.5)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., d), (..., d) -> (..., 1) row-wise dot products (on CPU faster than linalg.vecdot, measured)."""
    return (a * b).sum(-1, keepdim=True)


def orthogonal_direction(points: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """points: (P, n, d); grads: (P, n-2, d) at points[:, 1:-1] -> (P, n-2, d) step directions."""
    return orthogonal_step(points[:, :-2], points[:, 1:-1], points[:, 2:], grads)


def losses_and_grads(loss_fn: LossFn, thetas: torch.Tensor, max_models: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k,) losses and (k, d) gradients, evaluated ``max_models`` rows at a time to bound memory."""
    losses, grads = [], []
    for rows in torch.split(thetas.detach(), max_models):
        rows = rows.clone().requires_grad_(True)
        with torch.enable_grad():
            values = loss_fn(rows)
            (grad,) = torch.autograd.grad(values.sum(), rows)
        losses.append(values.detach())
        grads.append(grad)
    return torch.cat(losses), torch.cat(grads)


@torch.no_grad()
def evaluate_in_chunks(loss_fn: LossFn, thetas: torch.Tensor, max_models: int) -> torch.Tensor:
    return torch.cat([loss_fn(rows) for rows in torch.split(thetas, max_models)])


def dense_positions(n_points: int, alphas: Sequence[float]) -> np.ndarray:
    """Positions in point-index units: every point, plus ``i + alpha`` between points i and i+1."""
    inner = [i + a for i in range(n_points - 1) for a in alphas]
    return np.array(sorted(set(range(n_points)) | set(inner)), dtype=float)


def interpolate_polyline(points: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """points: (..., n, d) -> (..., m, d) at fractional point-index positions."""
    pos = torch.as_tensor(positions, dtype=points.dtype, device=points.device)
    left = pos.floor().long().clamp(max=points.shape[-2] - 2)
    frac = (pos - left).unsqueeze(-1)
    return points[..., left, :] * (1 - frac) + points[..., left + 1, :] * frac


@dataclass(frozen=True)
class Refinement:
    """Algorithm 4 (point insertion), applied every ``every`` optimisation steps."""

    every: int
    criterion: str = "distance"  # distance | loss
    threshold: float = 1.2  # T of Algorithm 4
    alphas: tuple[float, ...] = PAPER_ALPHAS  # loss criterion: where between points the loss is probed

    def __post_init__(self):
        if self.criterion not in ("distance", "loss"):
            raise ValueError(f"refinement criterion must be 'distance' or 'loss', got {self.criterion!r}")
        if self.every < 1:
            raise ValueError(f"refinement every must be >= 1, got {self.every}")


def distance_scores(points: torch.Tensor) -> torch.Tensor:
    """Algorithm 4's distance criterion: ||theta_i - theta_{i+1}|| / mu, mu = ||theta_last - theta_first|| / |path|."""
    mu = (points[-1] - points[0]).norm() / len(points)
    return (points[1:] - points[:-1]).norm(dim=-1) / mu


def loss_scores(loss_fn: LossFn, points: torch.Tensor, alphas: Sequence[float], max_models: int = 512) -> torch.Tensor:
    """Algorithm 4's loss criterion: max loss between theta_i and theta_{i+1} over L_max at the points."""
    at_points = evaluate_in_chunks(loss_fn, points, max_models)
    between = interpolate_polyline(points, np.array([i + a for i in range(len(points) - 1) for a in alphas]))
    values = evaluate_in_chunks(loss_fn, between, max_models).view(len(points) - 1, len(alphas))
    return values.max(dim=1).values / at_points.max()


def insert_points(points: torch.Tensor, scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, list[int]]:
    """Algorithm 4's insertion: if max(scores) > threshold, add the midpoints of the two segments
    with the largest scores. Returns the new points and the indices of the segments split.

    Interpretation of the printed algorithm: it then moves ``path_0`` and ``path_last`` out of the
    path into the border list B. In the authors' code the points are held as trainable "sectors"
    whose end points are the fixed minima, so the removal keeps the fixed end points out of the
    trainable set, it does not move the path's ends. Here the end points are never optimised anyway
    (Algorithm 3 moves interior points only), so the path keeps its two minima as first and last
    rows and simply grows by two points; no point is dropped.
    """
    if len(scores) == 0 or scores.max() <= threshold:
        return points, []
    worst = sorted(torch.topk(scores, min(2, len(scores))).indices.tolist())
    pieces, start = [], 0
    for segment in worst:
        pieces += [points[start:segment + 1], ((points[segment] + points[segment + 1]) / 2)[None]]
        start = segment + 1
    pieces.append(points[start:])
    return torch.cat(pieces), worst


class _FlatPaths:
    """P polylines of possibly different lengths stored as one (N, d) tensor, so that one batched
    evaluation serves every interior point of every path."""

    def __init__(self, paths: list[torch.Tensor]):
        self.points = torch.cat(paths)
        self.sizes = [len(p) for p in paths]
        device = self.points.device
        starts = np.cumsum([0] + self.sizes[:-1])
        self.interior = torch.cat([torch.arange(s + 1, s + n - 1) for s, n in zip(starts, self.sizes)]).to(device)
        self.interior_counts = [n - 2 for n in self.sizes]
        self.segment_starts = torch.cat([torch.arange(s, s + n - 1) for s, n in zip(starts, self.sizes)]).to(device)
        self.segment_counts = [n - 1 for n in self.sizes]

    def paths(self) -> list[torch.Tensor]:
        return list(torch.split(self.points, self.sizes))


def _refine(flat: _FlatPaths, state: torch.Tensor, refinement: Refinement, loss_fn: LossFn,
            max_models: int) -> tuple[_FlatPaths, torch.Tensor]:
    """``state`` (N, s): per-point optimiser state (momentum, ...); inserted points get the mean of their
    segment's two ends."""
    new_paths, new_states = [], []
    for path, rows in zip(flat.paths(), torch.split(state, flat.sizes)):
        scores = (distance_scores(path) if refinement.criterion == "distance"
                  else loss_scores(loss_fn, path, refinement.alphas, max_models))
        path, _ = insert_points(path, scores, refinement.threshold)
        rows, _ = insert_points(rows, scores, refinement.threshold)
        new_paths.append(path)
        new_states.append(rows)
    return _FlatPaths(new_paths), torch.cat(new_states)


def optimize_paths(
    loss_fn: LossFn,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *,
    n_points: int = 19,
    lr: float | Callable[[int], float] = 0.01,
    steps: int = 100,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    refinement: Refinement | None = None,
    alphas: Sequence[float] = PAPER_ALPHAS,
    max_models: int = 512,
    record_every: int = 1,
    seed: int = 0,
    progress: bool = False,
    description: str = "paths",
    checkpoints: Sequence[int] = (),
    tolerance: float | None = MAX_TOLERANCE,
    step_rule: str = "sgd",
    sample: str = "points",
) -> list[PathResult]:
    """Algorithm 3 for P paths at once: theta_a, theta_b (P, d) -> P optimised polylines.

    All interior points of all paths share one batched loss/gradient evaluation. Each step moves an
    interior point by ``-lr * (g - (g_left + g_right) / 2)``, where g is the gradient of the loss
    (plus ``weight_decay * theta``, the paper's L2 term, section 3.1) and g_left, g_right its
    projections on the directions to the neighbours; optional heavy-ball ``momentum`` is applied
    to that orthogonal step. ``lr`` may be a function of the step (e.g. the paper's S_oc10).
    ``clip_norm`` caps the norm of each point's orthogonal direction: deep ReLU nets have
    exploding gradients in the middle of a straight segment, where plain steps throw points far
    off (our addition, not in the paper; ``None`` disables it). ``refinement`` applies Algorithm 4
    every ``refinement.every`` steps (see :func:`insert_points`).
    The end points never move. Each path starts as the straight segment.

    ``checkpoints``: step counts after which every path's maximum is evaluated densely on ``loss_fn``
    (``PathResult.max_at_steps``; the final count is always included). With a constant ``lr`` the paths
    after k steps are exactly those of a k-step run, so one run measures several budgets; the
    checkpoint at 80% of ``steps`` gives the convergence rule of :meth:`PathResult.relative_change`.
    ``tolerance``: of the final maxima, as in :func:`evaluate_paths`.

    ``step_rule="normalized"`` makes the steps free of the loss's scale (ours): each point keeps a
    momentum ``m`` (decay ``momentum``) of its orthogonal direction and a running mean ``v`` (decay
    0.999) of that direction's squared norm, and moves by ``lr * s * m / sqrt(v)`` (bias-corrected as in
    Adam, but one scalar ``v`` per point, so the direction stays orthogonal to the path), where ``s`` is
    the path's initial spacing ``|theta_b - theta_a| / (n_points - 1)``: ``lr`` is then a fraction of
    that spacing per step, the same on every landscape and at every depth. ``clip_norm`` is not used.
    A path whose loss becomes non-finite raises :class:`PathsDiverged`.

    ``sample="segments"`` (ours) takes each step's gradients on the segments instead of at the points:
    one point ``(1 - a) x_i + a x_{i+1}`` per segment, ``a ~ U(0, 1)``, its gradient shared between the
    two ends as ``(1 - a) g`` and ``a g`` (the gradient of the loss at that point of the polyline, as in
    curve training). The points' own gradients leave the segments between low points free to cross
    barriers, which on deep nets dominates the path maximum (benchmarks/RESULTS.md).
    """
    if sample not in SAMPLES:
        raise ValueError(f"sample must be one of {SAMPLES}, got {sample!r}")
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {STEP_RULES}, got {step_rule!r}")
    if n_points < 3:
        raise ValueError(f"a path needs at least 3 points (one movable), got n_points={n_points}")
    theta_a, theta_b = torch.atleast_2d(theta_a), torch.atleast_2d(theta_b)
    flat = _FlatPaths(list(straight_path(theta_a, theta_b, n_points)))
    velocity = torch.zeros_like(flat.points)
    second = torch.zeros_like(flat.points[:, :1])
    spacing = ((theta_b - theta_a).norm(dim=-1, keepdim=True) / (n_points - 1)).repeat_interleave(n_points, dim=0)
    n_paths = len(flat.sizes)
    lr_at = lr if callable(lr) else (lambda _step: lr)
    generator = torch.Generator().manual_seed(seed)
    minibatch = getattr(loss_fn, "minibatch", None)
    histories: list[list[float]] = [[] for _ in range(n_paths)]
    wanted = {int(c) for c in checkpoints if 0 < c < steps}
    at_steps: list[dict[int, float]] = [{} for _ in range(n_paths)]
    for step in tqdm(range(steps), desc=description, disable=not progress, leave=False):
        if step in wanted:
            for p, result in enumerate(evaluate_paths(loss_fn, flat.paths(), alphas, max_models, tolerance=tolerance)):
                at_steps[p][step] = result.max_loss
        if refinement is not None and step > 0 and step % refinement.every == 0:
            flat, state = _refine(flat, torch.cat([velocity, second, spacing], dim=1), refinement, loss_fn, max_models)
            velocity, second, spacing = state[:, :-2], state[:, -2:-1], state[:, -1:]
        step_loss = minibatch(generator) if minibatch is not None else loss_fn
        idx = flat.interior
        centre = flat.points[idx]
        if sample == "segments":
            losses, grads, counts = _segment_gradients(step_loss, flat, generator, max_models)
        else:
            (losses, grads), counts = losses_and_grads(step_loss, centre, max_models), flat.interior_counts
        if not torch.isfinite(losses).all():
            bad = [p for p, values in enumerate(torch.split(losses, counts)) if not torch.isfinite(values).all()]
            raise PathsDiverged(bad, step)
        if weight_decay:
            grads = grads + weight_decay * centre
        direction = orthogonal_step(flat.points[idx - 1], centre, flat.points[idx + 1], grads)
        if step_rule == "normalized":
            moved = velocity[idx].lerp_(direction, 1 - momentum)
            velocity[idx] = moved
            second[idx] = second[idx].lerp_(_row_dot(direction, direction), 1 - SECOND_MOMENT_DECAY)
            v_hat = second[idx] / (1 - SECOND_MOMENT_DECAY ** (step + 1))
            scale = lr_at(step) / (1 - momentum ** (step + 1)) * spacing[idx] / v_hat.sqrt().clamp(min=1e-30)
            flat.points[idx] = centre.addcmul_(moved, scale, value=-1)  # centre - lr s m_hat / sqrt(v_hat)
        else:
            if clip_norm is not None:
                norms = direction.norm(dim=-1, keepdim=True)
                direction = direction * (clip_norm / norms.clamp(min=clip_norm))
            velocity[idx] = momentum * velocity[idx] + direction
            flat.points[idx] = centre - lr_at(step) * velocity[idx]
        if step % record_every == 0 or step == steps - 1:
            for p, values in enumerate(torch.split(losses, counts)):
                histories[p].append(float(values.max()))
    results = evaluate_paths(loss_fn, flat.paths(), alphas, max_models, histories, tolerance)
    norms = orthogonal_grad_at_highest(loss_fn, flat, weight_decay, max_models)
    for result, at, norm in zip(results, at_steps, norms):
        result.max_at_steps = {**at, steps: result.max_loss}
        result.orthogonal_grad_norm = norm
    return results


def _segment_gradients(loss_fn: LossFn, flat: "_FlatPaths", generator: torch.Generator,
                       max_models: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Losses at one uniform point of every segment, the gradients they put on the interior points
    (``(1 - a) g`` on a segment's start, ``a g`` on its end), and the segments per path."""
    lo = flat.segment_starts
    a = torch.rand(len(lo), 1, generator=generator).to(flat.points)
    probes = torch.lerp(flat.points[lo], flat.points[lo + 1], a)
    losses, probe_grads = losses_and_grads(loss_fn, probes, max_models)
    grads = torch.zeros_like(flat.points).index_add_(0, lo, (1 - a) * probe_grads).index_add_(0, lo + 1, a * probe_grads)
    return losses, grads[flat.interior], flat.segment_counts


def orthogonal_grad_at_highest(loss_fn: LossFn, flat: "_FlatPaths", weight_decay: float,
                               max_models: int) -> list[float]:
    """Per path, the norm of Algorithm 3's orthogonal gradient (on the full ``loss_fn``) at its highest
    interior point: near zero where the path has settled on the saddle (barcodes paper, Fig. 12)."""
    idx = flat.interior
    if len(idx) == 0:
        return [float("nan")] * len(flat.sizes)
    centre = flat.points[idx]
    losses, grads = losses_and_grads(loss_fn, centre, max_models)
    if weight_decay:
        grads = grads + weight_decay * centre
    norms = orthogonal_step(flat.points[idx - 1], centre, flat.points[idx + 1], grads).norm(dim=-1)
    return [float(n[int(torch.argmax(v))]) for v, n in zip(torch.split(losses, flat.interior_counts),
                                                           torch.split(norms, flat.interior_counts))]


def optimize_path(loss_fn: LossFn, theta_a: torch.Tensor, theta_b: torch.Tensor, **options) -> PathResult:
    """One path: theta_a, theta_b (d,) -> PathResult with ``.points`` (n, d) and ``.max_loss``."""
    return optimize_paths(loss_fn, theta_a.reshape(1, -1), theta_b.reshape(1, -1), **options)[0]


def adaptive_positions(points: torch.Tensor, alphas: Sequence[float]) -> np.ndarray:
    """Every point plus probes between them, each segment probed at least as densely (in parameter
    distance) as ``alphas`` probe a segment of an evenly spaced path of the same length: Algorithm 3
    leaves segments uneven, and fixed alphas on a long segment miss its peak (section 3.2)."""
    n = len(points)
    lengths = (points[1:] - points[:-1]).norm(dim=-1).cpu().numpy()
    spacing = lengths.sum() / ((n - 1) * (len(alphas) + 1)) if lengths.sum() > 0 else 1.0
    inner = [[i + a for a in alphas] for i in range(n - 1)]
    for i, length in enumerate(lengths):
        m = int(np.ceil(length / spacing - 1e-9)) if spacing > 0 else 0
        if m > len(alphas) + 1:
            inner[i] += [i + k / m for k in range(1, m)]
    return np.array(sorted(set(range(n)) | {x for row in inner for x in row}), dtype=float)


def _refine_maxima(loss_fn: LossFn, paths: list[torch.Tensor], positions: list[np.ndarray],
                   values: list[np.ndarray], tolerance: float, max_models: int) -> None:
    """Bracket search around each path's highest probe (in place): the bracket [left, right] of probes
    around the best position is halved each round, by probing between the best and both bracket ends,
    until the best value moves by less than ``tolerance`` of the path's loss range."""
    brackets = []
    for pos, val in zip(positions, values):
        k = int(np.argmax(val))
        brackets.append([pos[max(k - 1, 0)], pos[k], pos[min(k + 1, len(pos) - 1)]])
    active = list(range(len(paths)))
    for _ in range(MAX_REFINEMENTS):
        if not active:
            break
        probes = {p: [(brackets[p][0] + brackets[p][1]) / 2, (brackets[p][1] + brackets[p][2]) / 2] for p in active}
        batch = torch.cat([interpolate_polyline(paths[p], np.array(probes[p])) for p in active])
        new = evaluate_in_chunks(loss_fn, batch, max_models).cpu().numpy().reshape(len(active), 2)
        still = []
        for p, (left_value, right_value) in zip(active, new):
            (lo, best, hi), before = brackets[p], float(values[p].max())
            (left, right) = probes[p]
            positions[p] = np.append(positions[p], [left, right])
            values[p] = np.append(values[p], [left_value, right_value])
            if left_value > before and left_value >= right_value:
                brackets[p] = [lo, left, best]
            elif right_value > before:
                brackets[p] = [best, right, hi]
            else:
                brackets[p] = [left, best, right]
            span = float(np.ptp(values[p])) or 1.0
            if float(values[p].max()) - before > tolerance * span or hi - lo > 1e-3:
                still.append(p)
        active = still
    for p in range(len(paths)):
        order = np.argsort(positions[p], kind="stable")
        positions[p], values[p] = positions[p][order], values[p][order]


def evaluate_paths(loss_fn: LossFn, paths: list[torch.Tensor], alphas: Sequence[float] = PAPER_ALPHAS,
                   max_models: int = 512, histories: list[list[float]] | None = None,
                   tolerance: float | None = MAX_TOLERANCE) -> list[PathResult]:
    """Each polyline's (n_i, d) maximum: every point and probes between them (:func:`adaptive_positions`,
    at least the paper's ``alphas``, section 3.2) in one batched pass, then a bracket search around the
    highest probe until the maximum moves by less than ``tolerance`` of the loss range along the path
    (``None``: the probes only). ``positions`` / ``dense_losses`` hold every evaluated position."""
    positions = [adaptive_positions(points, alphas) if tolerance is not None else dense_positions(len(points), alphas)
                 for points in paths]
    dense_points = torch.cat([interpolate_polyline(points, pos) for points, pos in zip(paths, positions)])
    values = evaluate_in_chunks(loss_fn, dense_points, max_models).cpu().numpy()
    splits = list(np.split(values, np.cumsum([len(pos) for pos in positions])[:-1]))
    if tolerance is not None:
        _refine_maxima(loss_fn, paths, positions, splits, tolerance, max_models)
    histories = histories or [[] for _ in paths]
    return [PathResult(points.detach().clone(), float(dense.max()), pos, dense, history)
            for points, pos, dense, history in zip(paths, positions, splits, histories)]


def evaluate_path(loss_fn: LossFn, points: torch.Tensor, alphas: Sequence[float] = PAPER_ALPHAS,
                  max_models: int = 512, tolerance: float | None = MAX_TOLERANCE) -> PathResult:
    """Dense evaluation of one existing polyline points (n, d), e.g. the unoptimised straight segment."""
    return evaluate_paths(loss_fn, [points], alphas, max_models, tolerance=tolerance)[0]


def check_not_diverged(where: str, pairs: Sequence[tuple[int, int]], max_loss: Sequence[float],
                       straight_max_loss: Sequence[float], setting: str) -> None:
    """Stop with one line if a path's maximum is not finite or ends above DIVERGED_FACTOR x the maximum of the
    straight segment it started from (optimisation only lowers a path): such a maximum is never a bar."""
    for (i, j), top, straight in zip(pairs, max_loss, straight_max_loss):
        if not (np.isfinite(top) and top <= DIVERGED_FACTOR * straight):
            raise TrainingDiverged(f"{where}: the path between minima {i} and {j} diverged: its maximum {top:.4g} is not "
                                f"finite or above {DIVERGED_FACTOR:g} x its straight segment's {straight:.4g}; lower "
                                f"{setting}")
