"""The maximum of a merge path, converged where it is read: a certified maximum by refinement.

A merge path (:func:`losstopo.permutation.merge_neurons_batch`) descends every distance step with the same small
budget; converging every step costs hours on a CPU. Its maximum needs far less. Each step's loss ``L_k`` is an
upper bound on the constrained minimum its descent is heading for at ``d_k``: continuing that descent can only
lower it. So refine the argmax only:

1. ``k* = argmax_k L_k`` over the merge points;
2. if ``k*`` is certified -- the start (point 0, exact: no descent), the d = 0 point whose own final descent
   (``Convergence.final_max_iter``) moved its loss by <= ``tolerance`` of itself over its second half, or a point
   whose last refinement did -- stop: ``L_k*`` is the path maximum;
3. otherwise continue the descent of point ``k*`` at its own distance ``d_k*`` for ``budget`` L-BFGS iterations
   in two halves (as the d = 0 point's final descent: :func:`losstopo.descent.final_half_rule`), replace ``L_k*``
   by the result (never raising it) and mark ``k*`` converged when the second half moved its loss by
   <= ``tolerance`` of itself; go to 1.

At most ``max_refinements`` refinements per path; a path whose argmax is still uncertified then is reported as
not certified. Since every other ``L_k`` bounds its own step's continued descent from above, a certified
``L_k*`` is (within ``tolerance``) the maximum the same warm-started steps reach when each is descended to
convergence: no other step can end above it. (A longer descent of step k would also change the warm start of
step k + 1, which may then settle in another basin; that path-dependence is outside this bound.)

The maximum is also *bracketed*: that converged maximum lies between the largest loss of a converged point (the
start, the d = 0 point or a converged refinement, each within ``tolerance`` of its own constrained minimum: the
lower bound) and ``L_k*`` (the upper bound). Once the two are within ``tolerance`` of ``L_k*``, no further
refinement can move the maximum by more than the rule a refinement itself is held to, so the path stops there too:
the argmax can hop between neighbouring steps of nearly equal loss long after the value has settled (measured on an
MNIST teacher: ten refinements, each converged, the argmax still uncertified, the bracket 0.65% wide).

The paths of one job (e.g. all teachers of one width) refine together: each round descends the current argmax
of every unfinished path in one batch (:func:`losstopo.descent.descend_batch`), each at its own distance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from losstopo.descent import Convergence, descend_batch, final_half_rule
from losstopo.errors import LosstopoError
# _constrained is private to losstopo.permutation: the merge's own parametrisation ϑ_m = ϑ_l + d·e, reused so a
# refinement descends exactly the objective of the step it continues
from losstopo.permutation import (BatchLossFn, InputWhitening, MergePath, MLPParams, QuadraticLoss, _constrained,
                                  incoming_vectors, losses_along)
from losstopo.resume import LoopState

RELATIVE_TOLERANCE = 0.01  # the permutation point's rule: the second half moves the loss by <= 1% of itself


@dataclass
class PathMaximum:
    """One merge path's maximum after refinement (indices are merge points, 0 = the start, -1 = d = 0)."""

    losses: torch.Tensor  # (n_points,) float64: the merge's losses with every refined point's replaced
    index: int  # the merge point of the maximum
    value: float  # losses[index]
    certified: bool  # the maximum lies at a point whose descent converged (or the exact start)
    lower: float = 0.0  # the largest loss of a converged point: the converged maximum lies in [lower, value]
    bracketed: bool = False  # value - lower <= tolerance x value (certified maxima are bracketed)
    refined: list[int] = field(default_factory=list)  # merge points refined, in order (one may recur)
    half_losses: list[float] = field(default_factory=list)  # each refinement's loss after its first half
    iterations: int = 0  # L-BFGS iterations spent on refinements
    converged: dict[int, bool] = field(default_factory=dict)  # each judged point: did its last descent converge
    points: dict[int, MLPParams] = field(default_factory=dict)  # refined points (the merge's coordinates)

    def record(self) -> dict:
        """The numbers worth keeping (JSON-ready; no parameters)."""
        return {"refined_losses": self.losses.tolist(), "certified_index": self.index,
                "certified_maximum": self.value, "maximum_certified": self.certified, "refined": self.refined,
                "maximum_lower_bound": self.lower, "maximum_bracketed": self.bracketed,
                "refined_half_losses": self.half_losses, "refinement_iterations": self.iterations}


def moved_within(full: float, half: float, tolerance: float, scale: float | None = None,
                 resolution: float = 0.0) -> bool:
    """The second half of a descent moved its loss by at most ``tolerance`` of ``scale`` (default: the final loss)
    plus ``resolution`` (a descent's absolute tolerance: a loss at float32 round-off, e.g. 6e-13 where merged
    neurons are dead on every input, moves by more than any fraction of itself between two evaluations)."""
    return abs(full - half) <= tolerance * abs(full if scale is None else scale) + resolution


def _lower_bound(state: PathMaximum) -> float:
    """The largest loss among the points judged converged (the start always is)."""
    return max(float(state.losses[k]) for k, converged in state.converged.items() if converged)


def _initial(merge: MergePath, tolerance: float) -> PathMaximum:
    """A path's state before any refinement: the start is exact; the d = 0 point is judged by its final descent."""
    losses = merge.losses.to(torch.float64).clone()
    converged = {0: True}
    last = len(losses) - 1
    if merge.final_half_loss is not None:
        converged[last] = moved_within(float(losses[last]), merge.final_half_loss, tolerance)
    return PathMaximum(losses, 0, 0.0, False, converged=converged)


def _direction(point: MLPParams, start: MLPParams, layer: int, l: int, m: int) -> torch.Tensor:
    """e = (ϑ_m - ϑ_l)/|ϑ_m - ϑ_l| at ``point``; at d = 0 (no direction left) the start's, which the loss ignores."""
    vectors = incoming_vectors(point, layer)
    offset = vectors[m] - vectors[l]
    norm = torch.linalg.vector_norm(offset)
    if norm == 0:
        vectors = incoming_vectors(start, layer)
        offset = vectors[m] - vectors[l]
        norm = torch.linalg.vector_norm(offset)
    return offset / norm


def certify_maxima(merges: list[MergePath], loss_fn: BatchLossFn, budget: int, rule: Convergence = Convergence(),
                   max_refinements: int = 10, tolerance: float = RELATIVE_TOLERANCE,
                   whitening: InputWhitening | None = None) -> list[PathMaximum]:
    """Certify the maximum of each merge path by refining its argmax (module docstring); path ``b`` is
    ``merges[b]`` under ``loss_fn(·, b)``, as returned by :func:`losstopo.permutation.merge_neurons_batch` or
    ``[path.merge for path in permutation_paths(...)]``.

    ``budget``: iterations of one refinement, in two halves of ``budget // 2`` without the relative and absolute
    rules (``rule`` supplies the method and its other settings). ``whitening`` (a :class:`QuadraticLoss`, a merge in
    layer >= 2, points in the original coordinates as :func:`permutation_paths` returns them): the refinements
    descend in whitened coordinates; losses are measured in the original ones, like the merge's."""
    if budget < 2 or max_refinements < 0 or tolerance < 0:
        raise LosstopoError(f"need budget >= 2, max_refinements >= 0, tolerance >= 0; got {budget}, "
                            f"{max_refinements}, {tolerance}")
    if not merges:
        return []
    layer = merges[0].layer
    if any(merge.layer != layer for merge in merges):
        raise LosstopoError("the paths refined together must merge in the same layer")
    descent_loss, to_descent, from_descent = loss_fn, (lambda p: p), (lambda p: p)
    if whitening is not None:
        if layer < 2 or not isinstance(loss_fn, QuadraticLoss):
            raise LosstopoError("input whitening needs a merge in layer >= 2 and a QuadraticLoss")
        descent_loss = loss_fn.with_inputs(whitening.inputs(loss_fn.inputs))
        to_descent, from_descent = whitening.whiten, whitening.restore
    half_rule = final_half_rule(dataclasses.replace(rule, final_max_iter=budget))
    states = [_initial(merge, tolerance) for merge in merges]
    finished = [False] * len(merges)
    # an interrupted job resumes after its last saved round of refinements, or inside the round's descents
    saved_state = LoopState(f"certify {len(merges)} maxima, budget {budget}, {max_refinements} refinements, "
                            f"tolerance {tolerance}, {rule}")
    saved = saved_state.restore()
    if saved is not None:
        finished = saved["finished"]
        states = [_from_saved(entry, merge) for entry, merge in zip(saved["states"], merges)]
    while True:
        todo = []  # (path, merge point) of this round
        for b, state in enumerate(states):
            if finished[b]:
                continue
            k = int(torch.argmax(state.losses))
            state.index, state.value, state.lower = k, float(state.losses[k]), _lower_bound(state)
            state.certified = state.converged.get(k, False)
            state.bracketed = moved_within(state.value, state.lower, tolerance)
            if state.certified or state.bracketed or len(state.refined) >= max_refinements:
                finished[b] = True
            else:
                todo.append((b, k))
        if not todo:
            return states
        _refine_round(todo, merges, states, descent_loss, loss_fn, to_descent, from_descent, half_rule, tolerance,
                      saved_state)
        if saved_state.save_due():
            saved_state.save({"finished": finished, "states": [_to_saved(state) for state in states]})


def _to_saved(state: PathMaximum) -> dict:
    """A path's refinement state as tensors and plain containers (its refined points flat)."""
    return dataclasses.asdict(dataclasses.replace(state, points={})) | {
        "points": {k: point.flat() for k, point in state.points.items()}}


def _from_saved(saved: dict, merge: MergePath) -> PathMaximum:
    start = merge.params[0]
    points = {k: MLPParams.from_flat(flat.to(start.weights[0].device), start.layer_sizes, start.flatten_input)
              for k, flat in saved["points"].items()}
    return PathMaximum(**(saved | {"points": points}))


def _refine_round(todo, merges, states, descent_loss, loss_fn, to_descent, from_descent, half_rule, tolerance,
                  loop: LoopState) -> None:
    """One refinement of point k of path b for every (b, k) of ``todo``, descended in one batch; its two halves
    save their iterations beside the certification's ``loop`` state (a rerun resumes inside them)."""
    layer = merges[0].layer
    current = [states[b].points.get(k, merges[b].params[k]) for b, k in todo]
    starts = [to_descent(p.detach()) for p in current]
    sizes, flatten_input = starts[0].layer_sizes, starts[0].flatten_input
    stack = MLPParams.stack(starts)
    device, dtype = stack.weights[0].device, stack.weights[0].dtype
    n_free = stack.flat().shape[-1]
    directions = torch.stack([_direction(start, merges[b].params[0].to(dtype), layer, merges[b].l, merges[b].m)
                              for start, (b, _) in zip(starts, todo)])
    x = torch.cat([stack.flat(), directions.to(device=device, dtype=dtype)], dim=-1)
    problems = torch.tensor([b for b, _ in todo], device=device)
    distance = torch.stack([merges[b].distances[k] for b, k in todo]).to(device=device, dtype=dtype)
    l = torch.tensor([merges[b].l for b, _ in todo], device=device)
    m = torch.tensor([merges[b].m for b, _ in todo], device=device)

    def point(rows: torch.Tensor, index: torch.Tensor) -> MLPParams:
        free = MLPParams.from_flat(rows[:, :n_free], sizes, flatten_input)
        return _constrained(free, rows[:, n_free:], distance[index], layer, l[index], m[index])

    def objective(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return descent_loss(point(rows, index), problems[index])

    first = descend_batch(objective, x, half_rule, loop.part("half1", "a refinement's first half"))
    second = descend_batch(objective, first.x, half_rule, loop.part("half2", "a refinement's second half"))
    everyone = torch.arange(len(todo), device=device)
    for row, (b, k) in enumerate(todo):
        state, mine = states[b], everyone[row:row + 1]
        halfway, end = (from_descent(point(result.x[mine], mine).select(0)).detach() for result in (first, second))
        half_loss, end_loss = losses_along([halfway, end], loss_fn, b).tolist()
        state.refined.append(k)
        state.half_losses.append(half_loss)
        state.iterations += first.iterations[row] + second.iterations[row]
        state.converged[k] = moved_within(end_loss, half_loss, tolerance)
        if end_loss <= float(state.losses[k]):  # a descent lowers the loss; rounding of the coordinates must not raise it
            state.losses[k], state.points[k] = end_loss, end
