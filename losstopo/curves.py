"""Random-point curve and triangle optimisation (barcodes paper, section 4 and Appendix I).

Instead of moving many points of a polyline (Algorithm 3), a curve with fixed end points and
trainable control points is trained by sampling t ~ U(0, 1) per minibatch and descending the
loss at the sampled point (Garipov et al. 2018). A triangle is the same idea one dimension up:
vertices A, B, C, side centres D (AB), E (BC), F (CA) and centre O, every point of the standard
2-simplex written in one of six sub-triangles X1-O-X2 (Appendix I, eq. 10-12).

Curves and triangles of many vertex sets train together: their sampled points form one
``(k, d)`` batch for the loss function, as everywhere in losstopo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from losstopo.io import tensor_digest
from losstopo.paths import (PAPER_ALPHAS, LossFn, PathResult, PathsDiverged, convergence_checkpoint, evaluate_in_chunks,
                            evaluate_paths)
from losstopo.resume import LoopState
from losstopo.schedules import garipov_lr

CURVE_KINDS = ("polychain", "bezier")
TriangleControls = tuple[torch.Tensor, torch.Tensor]  # side centres D, E, F (P, 3, d) and centre O (P, d)


def curve_points(kind: str, start: torch.Tensor, bend: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """start, bend, end: (P, d); t: (P,) or (P, m) -> (P, d) or (P, m, d) points on each curve.

    polychain: start -> bend for t in [0, 1/2], bend -> end for t in [1/2, 1] (one bend).
    bezier: the quadratic Bezier curve with control point ``bend``.
    """
    squeeze = t.dim() == 1
    t = (t[:, None] if squeeze else t)[..., None].to(start)  # (P, m, 1)
    a, b, c = start[:, None], bend[:, None], end[:, None]
    if kind == "polychain":
        first = a * (1 - 2 * t) + b * (2 * t)
        second = b * (2 - 2 * t) + c * (2 * t - 1)
        points = torch.where(t <= 0.5, first, second)
    elif kind == "bezier":
        points = a * (1 - t) ** 2 + 2 * b * t * (1 - t) + c * t ** 2
    else:
        raise ValueError(f"unknown curve kind {kind!r}; use one of {CURVE_KINDS}")
    return points[:, 0] if squeeze else points


def triangle_weights(barycentric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Appendix I: barycentric weights (m, 3) of vertices (A, B, C) -> for each point, the
    sub-triangle X1-O-X2 it falls in and its coefficients there.

    Returns ``vertex`` (m,) in {0: A, 1: B, 2: C} (X1: the largest weight), ``side`` (m,) in
    {0: D = AB, 1: E = BC, 2: F = CA} (X2: the centre of the side from X1 to the middle weight's
    vertex) and ``coefficients`` (m, 3) for (X1, O, X2):
    ``(w_max - w_mid, 3 w_min, 2 w_mid - 2 w_min)``, eq. (12) generalised to any ordering.
    """
    ordered, order = torch.sort(barycentric, dim=1, descending=True)
    w_max, w_mid, w_min = ordered.unbind(1)
    vertex, middle = order[:, 0], order[:, 1]
    # Side index of the pair {vertex, middle}: AB -> D, BC -> E, CA -> F.
    side_of_pair = torch.tensor([[-1, 0, 2], [0, -1, 1], [2, 1, -1]], device=barycentric.device)
    side = side_of_pair[vertex, middle]
    coefficients = torch.stack([w_max - w_mid, 3 * w_min, 2 * w_mid - 2 * w_min], dim=1)
    return vertex, side, coefficients


def triangle_points(vertices: torch.Tensor, sides: torch.Tensor, centre: torch.Tensor,
                    barycentric: torch.Tensor) -> torch.Tensor:
    """vertices (P, 3, d) = A, B, C; sides (P, 3, d) = D, E, F; centre (P, d) = O;
    barycentric (P, m, 3) -> (P, m, d) points of each triangle model."""
    n_tri, m, _ = barycentric.shape
    vertex, side, coeff = triangle_weights(barycentric.reshape(-1, 3))
    rows = torch.arange(n_tri, device=vertices.device).repeat_interleave(m)
    x1, x2 = vertices[rows, vertex], sides[rows, side]
    o = centre[rows]
    points = coeff[:, :1].to(x1) * x1 + coeff[:, 1:2].to(x1) * o + coeff[:, 2:].to(x1) * x2
    return points.view(n_tri, m, -1)


def uniform_barycentric(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 3) points uniform on the 2-simplex (Dirichlet(1, 1, 1))."""
    e = -torch.log(torch.rand(n, 3, generator=generator).clamp_min(1e-12))
    return e / e.sum(dim=1, keepdim=True)


def barycentric_grid(resolution: int) -> torch.Tensor:
    """All (i, j, k) / resolution with i + j + k = resolution: (r+1)(r+2)/2 points, vertices and sides included."""
    rows = [(i, j, resolution - i - j) for i in range(resolution + 1) for j in range(resolution + 1 - i)]
    return torch.tensor(rows, dtype=torch.float64) / resolution


@dataclass
class CurveTraining:
    """Optimiser settings shared by curves and triangles (Table 6 / Appendix I: SGD, momentum, L2)."""

    steps: int
    lr: Callable[[int], float]
    momentum: float = 0.9
    weight_decay: float = 5e-4  # Garipov et al.: 0.5 * wd * ||w||^2 at each sampled point w (see _descend)


def _descend(trainable: torch.Tensor, points_at: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
             loss_fn: LossFn, training: CurveTraining, seed: int, progress: bool, description: str,
             checkpoint: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SGD with momentum on ``trainable`` (P, ..., d): each step samples one point w per model and descends
    ``loss(w) + 0.5 * weight_decay * ||w||^2``, the regulariser of Garipov et al.'s curve code: a control
    point with coefficient c(t) in w(t) gets ``weight_decay * c(t) * w(t)``, not ``weight_decay * bend``
    (the optimiser's own decay), which would pull the bend to 0 at every t.

    Returns the trained tensor and, with ``checkpoint``, a copy of it after that many steps (else None):
    how much the last steps still moved a maximum is how its convergence is measured."""
    if checkpoint is not None and not 0 <= checkpoint <= training.steps:
        raise ValueError(f"checkpoint {checkpoint} is outside the {training.steps} steps")
    # inside a job, an interrupted run resumes from the last saved step (losstopo.resume): the same start, steps
    # and seed give the same loop; its sampled points and minibatches come from the one generator saved with it
    state = LoopState(f"{description}: {training.steps} steps of seed {seed} from {tensor_digest(trainable)}")
    trainable = torch.nn.Parameter(trainable.clone())
    optimizer = torch.optim.SGD([trainable], lr=training.lr(0), momentum=training.momentum)
    generator = torch.Generator().manual_seed(seed)
    minibatch = getattr(loss_fn, "minibatch", None)
    snapshot, first = None, 0
    saved = state.restore()
    if saved is not None:
        first = saved["step"]
        snapshot = None if saved["snapshot"] is None else saved["snapshot"].to(trainable.device)
        with torch.no_grad():
            trainable.copy_(saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
    for step in tqdm(range(first, training.steps), initial=first, total=training.steps, desc=description,
                     disable=not progress, leave=False):
        if step > first and state.save_due():
            state.save({"step": step, "trainable": trainable.detach(), "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(), "snapshot": snapshot})
        if step == checkpoint:
            snapshot = trainable.detach().clone()
        for group in optimizer.param_groups:
            group["lr"] = training.lr(step)
        step_loss = minibatch(generator) if minibatch is not None else loss_fn
        optimizer.zero_grad(set_to_none=True)
        points = points_at(trainable, generator)
        regulariser = 0.5 * training.weight_decay * points.pow(2).sum() if training.weight_decay else 0.0
        (step_loss(points).sum() + regulariser).backward()
        optimizer.step()
    if checkpoint == training.steps:
        snapshot = trainable.detach().clone()
    return trainable.detach(), snapshot


def train_curves(loss_fn: LossFn, start: torch.Tensor, end: torch.Tensor, kind: str, training: CurveTraining,
                 seed: int = 0, progress: bool = False,
                 checkpoint: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """start, end (P, d) fixed -> trained bends (P, d), initialised at the midpoints (the straight segment).
    With ``checkpoint``: (bends, bends after ``checkpoint`` steps)."""

    def points_at(bend, generator):
        t = torch.rand(len(bend), generator=generator).to(bend.device)
        return curve_points(kind, start, bend, end, t)

    bends, at_checkpoint = _descend((start + end) / 2, points_at, loss_fn, training, seed, progress,
                                    f"{kind} curves", checkpoint)
    return bends if checkpoint is None else (bends, at_checkpoint)


def garipov_curve_training(steps: int, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> CurveTraining:
    """Garipov et al.'s curve schedule over ``steps`` minibatch steps: lr flat to half, linearly to 1% at 90%."""
    return CurveTraining(steps=steps, lr=lambda step: garipov_lr(step, steps, lr), momentum=momentum,
                         weight_decay=weight_decay)


def curve_paths(loss_fn: LossFn, starts: torch.Tensor, ends: torch.Tensor, kind: str, training: CurveTraining,
                n_points: int = 19, alphas=PAPER_ALPHAS, max_models: int = 512, seed: int = 0,
                progress: bool = False) -> list[PathResult]:
    """Curves trained between each start and end (P, d), returned as the paths of Algorithm 3 are: each curve as
    the polyline of its points at ``n_points`` even t (for a polychain with odd ``n_points`` the bend is one of
    them, so the polyline is the curve itself), its maximum found by the same adaptive probes and bracket search
    (:func:`losstopo.paths.evaluate_paths`), and ``max_at_steps`` holding that maximum after 80% of the steps
    and at the end, from which :meth:`PathResult.relative_change` measures convergence as for Algorithm 3."""
    checkpoint = convergence_checkpoint(training.steps)
    bends, early = train_curves(loss_fn, starts, ends, kind, training, seed, progress, checkpoint)
    diverged = (~torch.isfinite(bends).all(dim=1) | ~torch.isfinite(early).all(dim=1)).nonzero().flatten().tolist()
    if diverged:
        raise PathsDiverged(diverged, training.steps)
    t = torch.linspace(0, 1, n_points, dtype=starts.dtype, device=starts.device).expand(len(starts), -1)
    final = evaluate_paths(loss_fn, list(curve_points(kind, starts, bends, ends, t)), alphas, max_models)
    before = evaluate_paths(loss_fn, list(curve_points(kind, starts, early, ends, t)), alphas, max_models)
    for result, earlier in zip(final, before):
        result.max_at_steps = {checkpoint: earlier.max_loss, training.steps: result.max_loss}
    return final


def evaluate_curves(loss_fn: LossFn, start: torch.Tensor, bend: torch.Tensor, end: torch.Tensor, kind: str,
                    n_eval: int = 61, max_models: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Loss on an even t grid of each curve: returns t (n_eval,) and losses (P, n_eval)."""
    t = torch.linspace(0, 1, n_eval, device=start.device).expand(len(start), -1)
    points = curve_points(kind, start, bend, end, t).reshape(-1, start.shape[-1])
    losses = evaluate_in_chunks(loss_fn, points, max_models).view(len(start), n_eval)
    return t[0].cpu().numpy(), losses.cpu().numpy()


def train_triangles(loss_fn: LossFn, vertices: torch.Tensor, sides: torch.Tensor | None, training: CurveTraining,
                    seed: int = 0, progress: bool = False,
                    checkpoint: int | None = None) -> TriangleControls | tuple[TriangleControls, TriangleControls]:
    """Appendix I's two regimes for P triangles with fixed vertices (P, 3, d):

    - ``sides=None``: side centres D, E, F and centre O trainable (D, E, F start at the side midpoints);
    - ``sides`` (P, 3, d) given (e.g. trained curve bends): fixed, only the centre O trains.
    The centre starts at the vertices' centroid. Returns (sides (P, 3, d), centre (P, d)); with
    ``checkpoint``, that pair and the same pair after ``checkpoint`` steps.
    """
    midpoints = (vertices + vertices.roll(-1, dims=1)) / 2  # AB, BC, CA
    centroid = vertices.mean(dim=1)
    n_tri = vertices.shape[0]

    def sample(generator):
        return uniform_barycentric(n_tri, generator).to(vertices)[:, None]  # (P, 1, 3)

    if sides is None:
        def points_at(control, generator):  # control (P, 4, d): D, E, F, O
            return triangle_points(vertices, control[:, :3], control[:, 3], sample(generator))[:, 0]

        control, snapshot = _descend(torch.cat([midpoints, centroid[:, None]], dim=1), points_at, loss_fn, training,
                                     seed, progress, "triangles (sides and centre)", checkpoint)
        trained = control[:, :3], control[:, 3]
        at_checkpoint = None if snapshot is None else (snapshot[:, :3], snapshot[:, 3])
    else:
        def centre_points(centre, generator):
            return triangle_points(vertices, sides, centre, sample(generator))[:, 0]

        centre, snapshot = _descend(centroid, centre_points, loss_fn, training, seed, progress, "triangles (centre)",
                                    checkpoint)
        trained, at_checkpoint = (sides, centre), (sides, snapshot)
    return trained if checkpoint is None else (trained, at_checkpoint)


def evaluate_triangles(loss_fn: LossFn, vertices: torch.Tensor, sides: torch.Tensor, centre: torch.Tensor,
                       resolution: int = 12, max_models: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Loss on a barycentric grid of each triangle: grid (m, 3) and losses (P, m); the max is the triangle's value."""
    grid = barycentric_grid(resolution)
    batch = grid.to(vertices)[None].expand(len(vertices), -1, -1)
    points = triangle_points(vertices, sides, centre, batch).reshape(-1, vertices.shape[-1])
    losses = evaluate_in_chunks(loss_fn, points, max_models).view(len(vertices), len(grid))
    return grid.numpy(), losses.cpu().numpy()
