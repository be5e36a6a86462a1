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

LossFn = Callable[[torch.Tensor], torch.Tensor]
PAPER_ALPHAS = (0.2, 0.4, 0.6, 0.8)  # section 3.2: evaluation between optimised points


@dataclass
class PathResult:
    points: torch.Tensor  # (n, d); rows 0 and n-1 are the two minima
    max_loss: float  # maximum of the dense evaluation
    positions: np.ndarray  # (m,) position along the polyline in point-index units (0 .. n-1)
    dense_losses: np.ndarray  # (m,) loss at each position
    history: list[float] = field(default_factory=list)  # max interior loss per recorded step

    @property
    def argmax_position(self) -> float:
        return float(self.positions[int(np.argmax(self.dense_losses))])


def straight_path(theta_a: torch.Tensor, theta_b: torch.Tensor, n_points: int) -> torch.Tensor:
    """theta_a, theta_b: (..., d) -> (..., n_points, d), equally spaced on the segment."""
    t = torch.linspace(0, 1, n_points, dtype=theta_a.dtype, device=theta_a.device).view(-1, 1)
    return theta_a.unsqueeze(-2) * (1 - t) + theta_b.unsqueeze(-2) * t


def orthogonal_direction(points: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Algorithm 3's step direction for interior points.

    points: (P, n, d); grads: (P, n-2, d) at points[:, 1:-1]. Returns grads minus the mean of their
    projections on the unit directions to the left and from the right neighbour.
    """
    left = torch.nn.functional.normalize(points[:, 1:-1] - points[:, :-2], dim=-1)
    right = torch.nn.functional.normalize(points[:, 2:] - points[:, 1:-1], dim=-1)
    along_left = (grads * left).sum(-1, keepdim=True) * left
    along_right = (grads * right).sum(-1, keepdim=True) * right
    return grads - (along_left + along_right) / 2


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


def optimize_paths(
    loss_fn: LossFn,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *,
    n_points: int = 19,
    lr: float = 0.01,
    steps: int = 100,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    alphas: Sequence[float] = PAPER_ALPHAS,
    max_models: int = 512,
    record_every: int = 1,
    seed: int = 0,
    progress: bool = False,
    description: str = "paths",
) -> list[PathResult]:
    """Algorithm 3 for P paths at once: theta_a, theta_b (P, d) -> P optimised polylines.

    All P·(n-2) interior points share one batched loss/gradient evaluation. Each step moves an
    interior point by ``-lr * (g - (g_left + g_right) / 2)``, where g is the gradient of the loss
    (plus ``weight_decay * theta``, the paper's L2 term, section 3.1) and g_left, g_right its
    projections on the directions to the neighbours; optional heavy-ball ``momentum`` is applied
    to that orthogonal step. ``clip_norm`` caps the norm of each point's orthogonal direction:
    deep ReLU nets have exploding gradients in the middle of a straight segment, where plain steps
    throw points far off (our addition, not in the paper; ``None`` disables it).
    The endpoints never move. The path starts as the straight segment.
    """
    if n_points < 3:
        raise ValueError(f"a path needs at least 3 points (one movable), got n_points={n_points}")
    theta_a, theta_b = torch.atleast_2d(theta_a), torch.atleast_2d(theta_b)
    points = straight_path(theta_a, theta_b, n_points)  # (P, n, d)
    n_paths, _, dim = points.shape
    velocity = torch.zeros_like(points[:, 1:-1])
    generator = torch.Generator().manual_seed(seed)
    minibatch = getattr(loss_fn, "minibatch", None)
    histories: list[list[float]] = [[] for _ in range(n_paths)]
    for step in tqdm(range(steps), desc=description, disable=not progress, leave=False):
        step_loss = minibatch(generator) if minibatch is not None else loss_fn
        interior = points[:, 1:-1].reshape(-1, dim)
        losses, grads = losses_and_grads(step_loss, interior, max_models)
        grads = grads.view(n_paths, n_points - 2, dim)
        if weight_decay:
            grads = grads + weight_decay * points[:, 1:-1]
        direction = orthogonal_direction(points, grads)
        if clip_norm is not None:
            norms = direction.norm(dim=-1, keepdim=True)
            direction = direction * (clip_norm / norms.clamp(min=clip_norm))
        velocity = momentum * velocity + direction
        points[:, 1:-1] -= lr * velocity
        if step % record_every == 0 or step == steps - 1:
            for p, value in enumerate(losses.view(n_paths, -1).max(dim=1).values.tolist()):
                histories[p].append(value)
    positions = dense_positions(n_points, alphas)
    dense = evaluate_in_chunks(loss_fn, interpolate_polyline(points, positions).reshape(-1, dim), max_models)
    dense = dense.view(n_paths, len(positions)).cpu().numpy()
    return [
        PathResult(points[p].clone(), float(dense[p].max()), positions, dense[p], histories[p])
        for p in range(n_paths)
    ]


def optimize_path(loss_fn: LossFn, theta_a: torch.Tensor, theta_b: torch.Tensor, **options) -> PathResult:
    """One path: theta_a, theta_b (d,) -> PathResult with ``.points`` (n, d) and ``.max_loss``."""
    return optimize_paths(loss_fn, theta_a.reshape(1, -1), theta_b.reshape(1, -1), **options)[0]


def evaluate_path(loss_fn: LossFn, points: torch.Tensor, alphas: Sequence[float] = PAPER_ALPHAS,
                  max_models: int = 512) -> PathResult:
    """Dense evaluation of an existing polyline points (n, d), e.g. the unoptimised straight segment."""
    positions = dense_positions(len(points), alphas)
    dense = evaluate_in_chunks(loss_fn, interpolate_polyline(points, positions), max_models).cpu().numpy()
    return PathResult(points, float(dense.max()), positions, dense)
