"""Partner minima and permutation points of ReLU MLPs (weight-space symmetry paper, §4.1-4.3, §5).

Conventions (paper §3, "Preliminaries"): a network has layers ``k = 1..d``; ``W_k`` has shape
``(n_k, n_{k-1})``; hidden layers ``k = 1..d-1`` use ReLU, the output layer ``d`` is linear
(pre-softmax). Hidden ``layer`` arguments use the paper's 1-based ``k``; neuron indices are
0-based tensor rows. The parameter vector ``ϑ_m`` (Definition 1) is row ``m`` of ``W_k`` with
``b_k[m]`` appended; the output weight vector ``a_m`` (Definition 2) is column ``m`` of ``W_{k+1}``.

The path from a minimum θ to its partner ``σ_{l⇔m}(θ)`` (§4.1, Fig. 1-3) has four pieces:

1. merge: ``ϑ_m = ϑ_l + d·e`` with ``|e| = 1``; ``d`` goes down a log-spaced schedule to 0 and
   all other parameters descend to convergence at each ``d`` (:func:`merge_neurons`);
2. equalisation: at ``d = 0`` the output weights move to ``a_l = a_m`` at constant loss
   (:func:`equalise_output_weights`) -- the end is a permutation point (Lemma 1);
3. + 4. the mirror: pieces 1-2 with ``l`` and ``m`` swapped, walked backwards
   (:func:`permutation_path`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
from torch import nn

from losstopo.errors import LosstopoError


@dataclass
class MLPParams:
    """Weights ``W_k (n_k, n_{k-1})`` and biases ``b_k (n_k,)`` of a ReLU MLP with a linear output.

    ``flatten_input`` mirrors a leading ``nn.Flatten`` (inputs ``(B, ...)`` become ``(B, n_0)``).
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    flatten_input: bool = False

    @property
    def depth(self) -> int:
        """d: the number of Linear layers (d-1 hidden layers)."""
        return len(self.weights)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(n_0, n_1, ..., n_d)."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax outputs f(x; θ), shape (B, n_d)."""
        h = x.flatten(1) if self.flatten_input else x
        for k, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            h = nn.functional.linear(h, w, b)
            if k < self.depth:
                h = torch.relu(h)
        return h

    __call__ = forward

    def detach(self) -> "MLPParams":
        """Detached copies (no shared storage, no autograd history)."""
        return MLPParams([w.detach().clone() for w in self.weights],
                         [b.detach().clone() for b in self.biases], self.flatten_input)

    def to(self, dtype: torch.dtype | None = None, device=None) -> "MLPParams":
        return MLPParams([w.to(device=device, dtype=dtype) for w in self.weights],
                         [b.to(device=device, dtype=dtype) for b in self.biases], self.flatten_input)

    def flat(self) -> torch.Tensor:
        """(dim,) vector ordered W_1, b_1, W_2, b_2, ... -- the ``named_parameters`` order of :meth:`to_module`."""
        pieces = []
        for w, b in zip(self.weights, self.biases):
            pieces += [w.reshape(-1), b]
        return torch.cat(pieces)

    @classmethod
    def from_flat(cls, theta: torch.Tensor, layer_sizes: tuple[int, ...], flatten_input: bool = False) -> "MLPParams":
        """Inverse of :meth:`flat` for the architecture ``layer_sizes = (n_0, ..., n_d)``."""
        weights, biases, start = [], [], 0
        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
            weights.append(theta[start:start + n_out * n_in].view(n_out, n_in))
            start += n_out * n_in
            biases.append(theta[start:start + n_out])
            start += n_out
        if start != theta.numel():
            raise LosstopoError(f"flat vector has {theta.numel()} entries, architecture {layer_sizes} needs {start}")
        return cls(weights, biases, flatten_input)

    @classmethod
    def from_module(cls, module: nn.Sequential) -> "MLPParams":
        """Copy the parameters of ``nn.Sequential([Flatten,] Linear, ReLU, ..., Linear)``."""
        layers = list(module)
        flatten_input = bool(layers) and isinstance(layers[0], nn.Flatten)
        body = layers[1:] if flatten_input else layers
        expected_relu = [isinstance(layer, nn.ReLU) for layer in body[1::2]]
        linears = body[0::2]
        if (not linears or not all(expected_relu) or len(body) % 2 == 0
                or not all(isinstance(layer, nn.Linear) and layer.bias is not None for layer in linears)):
            raise LosstopoError("permutation points need nn.Sequential([Flatten,] Linear, ReLU, ..., Linear) "
                                f"with biases, got {module}")
        return cls([layer.weight.detach().clone() for layer in linears],
                   [layer.bias.detach().clone() for layer in linears], flatten_input)

    def to_module(self) -> nn.Sequential:
        """A fresh ``nn.Sequential`` computing :meth:`forward` (same dtype and device)."""
        layers: list[nn.Module] = [nn.Flatten()] if self.flatten_input else []
        for k, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            linear = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device)
            with torch.no_grad():
                linear.weight.copy_(w)
                linear.bias.copy_(b)
            layers.append(linear)
            if k < self.depth:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)


LossFn = Callable[[MLPParams], torch.Tensor]


def quadratic_loss(inputs: torch.Tensor, targets: torch.Tensor, normalise: bool = False) -> LossFn:
    """``L(θ) = 1/T Σ_μ |y_μ - f(x_μ; θ)|²``, divided by ``<(y^μ_i)²>`` if ``normalise`` (the MNIST loss of §5)."""
    scale = targets.pow(2).mean() if normalise else torch.ones((), dtype=targets.dtype)

    def loss(params: MLPParams) -> torch.Tensor:
        return (targets - params.forward(inputs)).pow(2).sum(dim=1).mean() / scale

    return loss


# ---------------------------------------------------------------- neurons of a hidden layer

def _check_hidden(params: MLPParams, layer: int, *neurons: int) -> None:
    if not 1 <= layer < params.depth:
        raise LosstopoError(f"layer must be a hidden layer 1..{params.depth - 1}, got {layer}")
    width = params.weights[layer - 1].shape[0]
    for n in neurons:
        if not 0 <= n < width:
            raise LosstopoError(f"neuron {n} out of range for layer {layer} of {width} neurons")


def incoming_vectors(params: MLPParams, layer: int) -> torch.Tensor:
    """(n_k, n_{k-1}+1): row m is the parameter vector ϑ_m^(k) (Definition 1)."""
    _check_hidden(params, layer)
    return torch.cat([params.weights[layer - 1], params.biases[layer - 1][:, None]], dim=1)


def outgoing_weights(params: MLPParams, layer: int, neuron: int) -> torch.Tensor:
    """(n_{k+1},): the output weight vector a_m^(k) (Definition 2)."""
    _check_hidden(params, layer, neuron)
    return params.weights[layer][:, neuron]


def neuron_distance(params: MLPParams, layer: int, l: int, m: int) -> torch.Tensor:
    """|ϑ_m - ϑ_l| (Euclidean; Definition 5 squares it, the reparametrisation of §4.1 does not)."""
    vectors = incoming_vectors(params, layer)
    return torch.linalg.vector_norm(vectors[m] - vectors[l])


def permute_neurons(params: MLPParams, layer: int, order: torch.Tensor) -> MLPParams:
    """Neuron ``i`` of the result is neuron ``order[i]`` of ``params`` (a point of the permutation set, Definition 3)."""
    _check_hidden(params, layer)
    weights, biases = list(params.weights), list(params.biases)
    weights[layer - 1] = weights[layer - 1][order]
    biases[layer - 1] = biases[layer - 1][order]
    weights[layer] = weights[layer][:, order]
    return MLPParams(weights, biases, params.flatten_input)


def swap_neurons(params: MLPParams, layer: int, l: int, m: int) -> MLPParams:
    """The partner σ^(k)_{l⇔m}(θ): neurons l and m of hidden layer k exchanged; same function f."""
    _check_hidden(params, layer, l, m)
    order = torch.arange(params.weights[layer - 1].shape[0], device=params.weights[layer - 1].device)
    order[l], order[m] = m, l
    return permute_neurons(params, layer, order)


def with_incoming_vector(params: MLPParams, layer: int, neuron: int, vector: torch.Tensor) -> MLPParams:
    """``params`` with ϑ_neuron replaced by ``vector`` (out of place, differentiable in both)."""
    _check_hidden(params, layer, neuron)
    index = torch.tensor([neuron], device=vector.device)
    weights, biases = list(params.weights), list(params.biases)
    weights[layer - 1] = weights[layer - 1].index_copy(0, index, vector[None, :-1])
    biases[layer - 1] = biases[layer - 1].index_copy(0, index, vector[-1:])
    return MLPParams(weights, biases, params.flatten_input)


def redistribute_output_weights(params: MLPParams, layer: int, l: int, m: int, shift: torch.Tensor) -> MLPParams:
    """a_l + shift, a_m - shift: a move along the n_{k+1}-dim equal-loss subspace of Proposition 1 (ii).

    Leaves f unchanged only where ϑ_l = ϑ_m, i.e. at a permutation point.
    """
    _check_hidden(params, layer, l, m)
    weights = list(params.weights)
    out = weights[layer].clone()
    out[:, l] = out[:, l] + shift
    out[:, m] = out[:, m] - shift
    weights[layer] = out
    return MLPParams(weights, list(params.biases), params.flatten_input)


def incoming_cosine_similarity(params: MLPParams, layer: int) -> torch.Tensor:
    """(n_k, n_k): cosine similarity between the parameter vectors ϑ of layer k."""
    vectors = nn.functional.normalize(incoming_vectors(params, layer), dim=1)
    return vectors @ vectors.T


def merge_candidates(params: MLPParams, layer: int) -> tuple[int, int]:
    """(l, m), l < m: the pair of layer k whose ϑ have the highest cosine similarity (the pair merged in §5)."""
    similarity = incoming_cosine_similarity(params, layer)
    n = similarity.shape[0]
    if n < 2:
        raise LosstopoError(f"layer {layer} has {n} neuron(s); merging needs two")
    similarity = similarity.masked_fill(torch.eye(n, dtype=torch.bool, device=similarity.device), -math.inf)
    l, m = divmod(int(similarity.argmax()), n)
    return min(l, m), max(l, m)


# ---------------------------------------------------------------- descent "until convergence"

@dataclass(frozen=True)
class Convergence:
    """The rule for "gradient descent until convergence" at one fixed distance d (§4.1, Fig. 2).

    Each iteration is one step of ``method``: ``"gd"`` (full-batch gradient descent with step
    ``lr``; the paper's choice), ``"adam"`` (Adam, ``lr``) or ``"lbfgs"`` (one L-BFGS iteration
    with a strong-Wolfe line search of at most ``line_search_evals`` evaluations, initial step
    ``lr``, ``history_size`` curvature pairs). Before each iteration the
    loss L and the gradient norm |∇L| over all free variables are evaluated; descent stops

    * converged, as soon as ``|∇L| <= grad_tol``, or after an iteration that changed the loss by
      ``|L_prev - L| <= rel_tol * |L_prev| + abs_tol`` (so a point at exactly zero loss stops at
      once; ``abs_tol`` stops the chase of relative progress on losses that are already ~0);
    * not converged, after ``max_iter`` iterations (reported in ``MergePath.converged``).
    """

    method: str = "lbfgs"
    lr: float = 1.0
    max_iter: int = 200
    grad_tol: float = 1e-9
    rel_tol: float = 1e-9
    abs_tol: float = 0.0
    history_size: int = 50
    line_search_evals: int = 10

    def optimizer(self, variables: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.method == "gd":
            return torch.optim.SGD(variables, lr=self.lr)
        if self.method == "adam":
            return torch.optim.Adam(variables, lr=self.lr)
        if self.method == "lbfgs":
            # tolerances 0: the stopping rule above is the only one; recent torch caps the line
            # search at max_eval - 1 evaluations (a cap of 0 with the default max_eval stalls it)
            return torch.optim.LBFGS(variables, lr=self.lr, max_iter=1, max_eval=self.line_search_evals + 1,
                                     history_size=self.history_size,
                                     tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
        raise LosstopoError(f"unknown descent method {self.method!r}; use 'gd', 'adam' or 'lbfgs'")


def _loss_and_grad_norm(objective: Callable[[], torch.Tensor], variables: list[torch.Tensor]) -> tuple[float, float]:
    loss = objective()
    grads = torch.autograd.grad(loss, variables, allow_unused=True)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    return float(loss.detach()), norm


def descend(objective: Callable[[], torch.Tensor], variables: list[torch.Tensor], rule: Convergence) -> tuple[int, bool]:
    """Minimise ``objective()`` over the leaf tensors ``variables`` in place; returns (iterations, converged).

    The loss and gradient norm that the stopping rule reads are those of the step's first closure
    call, which every optimiser here makes at the current point: one evaluation per iteration
    for gd and adam instead of two. The step after the last check is taken anyway (it cannot
    raise the loss by more than the rule's tolerance for gd/adam near convergence, and L-BFGS's
    line search never accepts an increase).
    """
    optimizer = rule.optimizer(variables)
    at_current: list[tuple[float, float]] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        if not at_current:
            norm = math.sqrt(sum(float(v.grad.pow(2).sum()) for v in variables if v.grad is not None))
            at_current.append((float(loss.detach()), norm))
        return loss

    previous = None
    for iteration in range(rule.max_iter):
        at_current.clear()
        optimizer.step(closure)
        loss, grad_norm = at_current[0]
        if grad_norm <= rule.grad_tol:
            return iteration, True
        if previous is not None and abs(previous - loss) <= rule.rel_tol * abs(previous) + rule.abs_tol:
            return iteration, True
        previous = loss
    loss, grad_norm = _loss_and_grad_norm(objective, variables)
    return rule.max_iter, grad_norm <= rule.grad_tol


def minimise(params: MLPParams, loss_fn: LossFn, rule: Convergence = Convergence()) -> tuple[MLPParams, int, bool]:
    """Unconstrained descent of all parameters from ``params``; returns (params, iterations, converged)."""
    variables = [t.detach().clone().requires_grad_(True) for t in params.weights + params.biases]
    depth = params.depth

    def current() -> MLPParams:
        return MLPParams(variables[:depth], variables[depth:], params.flatten_input)

    iterations, converged = descend(lambda: loss_fn(current()), variables, rule)
    return current().detach(), iterations, converged


# ---------------------------------------------------------------- the merge (first quarter of the path)

def distance_schedule(initial: float, n_steps: int, final_ratio: float = 1e-4, dtype=torch.float64) -> torch.Tensor:
    """n_steps log-spaced distances from ``initial`` down to ``initial * final_ratio`` (Fig. 2: 200, §5: 100)."""
    if initial <= 0 or n_steps < 2 or not 0 < final_ratio < 1:
        raise LosstopoError(f"need initial > 0, n_steps >= 2, 0 < final_ratio < 1; got {initial}, {n_steps}, {final_ratio}")
    return torch.logspace(math.log10(initial), math.log10(initial * final_ratio), n_steps, dtype=dtype)


@dataclass
class MergePath:
    """Point i is the constrained minimum at ``distances[i]``; point 0 is the start, the last (d = 0) has ϑ_l = ϑ_m."""

    layer: int
    l: int
    m: int
    distances: torch.Tensor
    losses: torch.Tensor
    params: list[MLPParams]
    iterations: list[int]
    converged: list[bool]


def _constrained(free: list[torch.Tensor], direction: torch.Tensor, distance: float,
                 layer: int, l: int, m: int, flatten_input: bool) -> MLPParams:
    """θ with ϑ_m = ϑ_l + d·e, e = direction/|direction|; row m of the free W_k, b_k is ignored."""
    depth = len(free) // 2
    params = MLPParams(free[:depth], free[depth:], flatten_input)
    theta_l = incoming_vectors(params, layer)[l]
    unit = direction / torch.linalg.vector_norm(direction)
    return with_incoming_vector(params, layer, m, theta_l + distance * unit)


def _descend_at_distance(free: list[torch.Tensor], direction: torch.Tensor, distance: float, layer: int,
                         l: int, m: int, flatten_input: bool, loss_fn: LossFn, rule: Convergence):
    """One step of the merge: descent at fixed d from (free, direction); returns the new ones and the outcome."""
    variables = [t.detach().clone().requires_grad_(True) for t in free + [direction]]

    def point() -> MLPParams:
        return _constrained(variables[:-1], variables[-1], distance, layer, l, m, flatten_input)

    n_iter, ok = descend(lambda: loss_fn(point()), variables, rule)
    new_direction = variables[-1].detach()
    return [t.detach() for t in variables[:-1]], new_direction / torch.linalg.vector_norm(new_direction), \
        point().detach(), n_iter, ok


def merge_neurons(start: MLPParams, layer: int, l: int, m: int, loss_fn: LossFn, n_steps: int = 200,
                  final_ratio: float = 1e-4, rule: Convergence = Convergence()) -> MergePath:
    """Drive ϑ_m onto ϑ_l with the reparametrisation ϑ_m = ϑ_l + d·e, |e| = 1 (§4.1, Fig. 1, Fig. 2).

    ``d`` follows :func:`distance_schedule` from ``d_0 = |ϑ_m - ϑ_l|`` at ``start`` down to
    ``d_0 * final_ratio`` in ``n_steps`` values, then a last step at ``d = 0`` (the permutation
    point's parameter vectors coincide). ``start`` is recorded as point 0 without descent; at
    each later ``d`` all other parameters -- ϑ_l and e included, e kept unit length by
    parametrising it as ``u/|u|`` -- descend from the previous point by ``rule``
    (:class:`Convergence`), so ``|ϑ_m - ϑ_l| = d`` holds exactly at every point.
    """
    _check_hidden(start, layer, l, m)
    if l == m:
        raise LosstopoError("merging needs two different neurons")
    start = start.detach()
    initial = float(neuron_distance(start, layer, l, m))
    if initial == 0.0:
        raise LosstopoError(f"neurons {l} and {m} of layer {layer} already coincide")
    vectors = incoming_vectors(start, layer)
    direction = (vectors[m] - vectors[l]) / initial
    free = start.weights + start.biases

    distances, points, iterations, converged = [initial], [start], [0], [True]
    for distance in distance_schedule(initial, n_steps, final_ratio)[1:].tolist() + [0.0]:
        free, direction, reached, n_iter, ok = _descend_at_distance(
            free, direction, distance, layer, l, m, start.flatten_input, loss_fn, rule)
        distances.append(distance)
        points.append(reached)
        iterations.append(n_iter)
        converged.append(ok)
    with torch.no_grad():
        losses = torch.tensor([float(loss_fn(p)) for p in points], dtype=torch.float64)
    return MergePath(layer, l, m, torch.tensor(distances, dtype=torch.float64), losses, points, iterations, converged)


# ---------------------------------------------------------------- equalisation and the mirrored half

def equalise_output_weights(params: MLPParams, layer: int, l: int, m: int, n_points: int = 11) -> list[MLPParams]:
    """From ϑ_l = ϑ_m, move linearly to a_l = a_m = (a_l + a_m)/2 keeping a_l + a_m fixed (§4.1, t = 1/4 -> 1/2).

    f, hence the loss, is constant along the segment; its last point is a permutation point
    (Lemma 1): ``swap_neurons`` leaves it unchanged exactly.
    """
    vectors = incoming_vectors(params, layer)
    scale = float(vectors[[l, m]].abs().max())
    if not torch.allclose(vectors[l], vectors[m], rtol=0.0, atol=1e-12 * max(scale, 1.0)):
        raise LosstopoError(f"output weights can be equalised only where ϑ_l = ϑ_m; distance is "
                            f"{float(neuron_distance(params, layer, l, m)):.3g}")
    if n_points < 2:
        raise LosstopoError(f"an equalisation segment needs n_points >= 2, got {n_points}")
    a_l, a_m = outgoing_weights(params, layer, l), outgoing_weights(params, layer, m)
    mean = (a_l + a_m) / 2
    segment = []
    for t in torch.linspace(0, 1, n_points).tolist():
        weights = list(params.weights)
        out = weights[layer].clone()
        # (1-t)·a + t·mean: exactly `mean` for both at t = 1, so the end is swap-invariant
        out[:, l] = (1 - t) * a_l + t * mean
        out[:, m] = (1 - t) * a_m + t * mean
        weights[layer] = out
        segment.append(MLPParams(weights, list(params.biases), params.flatten_input))
    return segment


@dataclass
class PermutationPath:
    """Minimum -> permutation point -> partner minimum (§4.1): ``params[0]`` is the start,
    ``params[permutation_index]`` the permutation point, ``params[-1] = swap_neurons(params[0])``.

    ``params[i] = swap_neurons(params[-1-i])`` (the mirrored half); ``distances`` holds the
    measured |ϑ_m - ϑ_l| of the start's labels l, m; ``equalisation`` indexes the constant-loss segment.
    """

    params: list[MLPParams]
    losses: torch.Tensor
    distances: torch.Tensor
    permutation_index: int
    equalisation: slice
    merge: MergePath

    def flat(self) -> torch.Tensor:
        """(n_points, dim): the path as stacked flat vectors (order of :meth:`MLPParams.flat`)."""
        return torch.stack([p.flat() for p in self.params])


def mirrored_half(first_half: list[MLPParams], layer: int, l: int, m: int) -> list[MLPParams]:
    """The path after the permutation point: the first half with l ⇔ m, walked backwards (its end excluded)."""
    return [swap_neurons(p, layer, l, m) for p in reversed(first_half[:-1])]


def permutation_path(start: MLPParams, layer: int, l: int, m: int, loss_fn: LossFn, n_steps: int = 200,
                     final_ratio: float = 1e-4, rule: Convergence = Convergence(),
                     n_equalise: int = 11) -> PermutationPath:
    """The complete path from ``start`` through a permutation point to its partner σ_{l⇔m}(start) (§4.1)."""
    merge = merge_neurons(start, layer, l, m, loss_fn, n_steps, final_ratio, rule)
    segment = equalise_output_weights(merge.params[-1], layer, l, m, n_equalise)
    first_half = merge.params + segment[1:]
    path = first_half + mirrored_half(first_half, layer, l, m)
    with torch.no_grad():
        losses = torch.tensor([float(loss_fn(p)) for p in path], dtype=torch.float64)
        distances = torch.tensor([float(neuron_distance(p, layer, l, m)) for p in path], dtype=torch.float64)
    middle = len(first_half) - 1
    return PermutationPath(path, losses, distances, middle, slice(len(merge.params) - 1, middle + 1), merge)


# ---------------------------------------------------------------- permutation points from a smaller network

def permutation_point_from_smaller(params_small: MLPParams, layer: int, neuron: int, split: float = 0.5) -> MLPParams:
    """Definition 4: duplicate ``neuron`` of layer k of a network with n_k - 1 neurons there.

    The copy is appended as neuron ``n_k - 1`` (the last) with ϑ_copy = ϑ_neuron; the output
    weights become ``split·a`` (neuron) and ``(1 - split)·a`` (copy). ``split = 1/2`` is the
    permutation point of Definition 4; any other split lies on the same equal-loss line
    (Theorem 1, Proposition 1 ii), and all are critical points if ``params_small`` is one (Prop. 1 i).
    """
    _check_hidden(params_small, layer, neuron)
    weights, biases = list(params_small.weights), list(params_small.biases)
    weights[layer - 1] = torch.cat([weights[layer - 1], weights[layer - 1][neuron:neuron + 1]])
    biases[layer - 1] = torch.cat([biases[layer - 1], biases[layer - 1][neuron:neuron + 1]])
    a = weights[layer][:, neuron:neuron + 1]
    out = torch.cat([weights[layer], (1 - split) * a], dim=1)
    out[:, neuron] = split * a[:, 0]
    weights[layer] = out
    return MLPParams(weights, biases, params_small.flatten_input)


# ---------------------------------------------------------------- counting (Proposition 3)

def _partitions(total: int, largest: int | None = None):
    """Integer partitions of ``total`` as non-increasing tuples."""
    largest = total if largest is None else largest
    if total == 0:
        yield ()
        return
    for part in range(min(total, largest), 0, -1):
        for rest in _partitions(total - part, part):
            yield (part,) + rest


def count_permutation_points(K: int, n: int) -> Fraction:
    """T(K, n): K-th order permutation points of a layer of n neurons per global minimum (Prop. 3, Def. 6).

    A K-th order point of a layer of n neurons carries the n - K distinct parameter vectors of a
    smaller network's minimum, each at least once; a vector carried by r + 1 neurons (r extra
    copies) loses the (r + 1)! orderings of its identical copies. Per global minimum (n! of them):

        T(K, n) = Σ_{partitions (r_1..r_p) of K} #{ways to pick which vectors carry r_1..r_p} / Π_i (r_i + 1)!

    which for K = 1, 2, 3 (Prop. 3 i) reads

        T(1, n) = (n-1)/2
        T(2, n) = (n-2)/3! + C(n-2, 2)/(2!)²
        T(3, n) = (n-3)/4! + (n-3)(n-4)/(3!·2!) + C(n-3, 3)/(2!)³

    and equals S(n, n-K)·(n-K)!/n! (S: Stirling numbers of the second kind). The all-pairs term
    C(n-K, K)/2^K is the bound of Prop. 3 (ii), :func:`permutation_points_lower_bound`.
    Defined for 1 <= K < n (the paper states it for n >= 2K).
    """
    if not 1 <= K < n:
        raise ValueError(f"T(K, n) needs 1 <= K < n, got K={K}, n={n}")
    if K == 1:
        return Fraction(n - 1, 2)
    if K == 2:
        return Fraction(n - 2, 6) + Fraction(math.comb(n - 2, 2), 4)
    if K == 3:
        return Fraction(n - 3, 24) + Fraction((n - 3) * (n - 4), 12) + Fraction(math.comb(n - 3, 3), 8)
    vectors, total = n - K, Fraction(0)
    for parts in _partitions(K):
        choices = math.perm(vectors, len(parts))  # ordered picks; equal parts are unordered:
        for r in set(parts):
            choices //= math.factorial(parts.count(r))
        total += Fraction(choices, math.prod(math.factorial(r + 1) for r in parts))
    return total


def permutation_points_lower_bound(K: int, n: int) -> Fraction:
    """Prop. 3 (ii): T(K, n) >= C(n-K, K) / 2^K (K vectors each carried by exactly two neurons)."""
    if not 1 <= K < n:
        raise ValueError(f"the bound needs 1 <= K < n, got K={K}, n={n}")
    return Fraction(math.comb(n - K, K), 2 ** K)
