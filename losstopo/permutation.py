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

from losstopo.descent import Convergence, descend_batch, final_half_rule
from losstopo.errors import LosstopoError
from losstopo.resume import LoopState


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
        return (self.weights[0].shape[-1],) + tuple(w.shape[-2] for w in self.weights)

    @property
    def batch_shape(self) -> torch.Size:
        """() for one network; (n,) for a stack of n networks of the same architecture (:meth:`stack`)."""
        return self.weights[0].shape[:-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax outputs f(x; θ): (T, n_d) for inputs (T, ...); (n, T, n_d) for a stack of n networks.

        A stack of one computes exactly what the network alone does (a teacher's loss against its own
        outputs is exactly 0 either way)."""
        if self.batch_shape == (1,):
            return self.select(0).forward(x)[None]
        h = x.flatten(1) if self.flatten_input else x
        for k, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            hidden = k < self.depth
            if w.dim() == 2:
                h = nn.functional.linear(h, w, b)
            elif h.dim() == 2:  # shared inputs: one matrix product for the whole stack
                n, n_out, n_in = w.shape
                h = nn.functional.linear(h, w.reshape(n * n_out, n_in), b.reshape(n * n_out))
                if hidden:  # on the contiguous product: on the strided view below it ran ~3x slower (backward ~10x)
                    h = torch.relu(h)
                h = h.view(len(h), n, n_out).transpose(0, 1)
                continue
            else:
                h = torch.baddbmm(b[:, None], h, w.transpose(1, 2))
            if hidden:
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
        """(dim,) vector ordered W_1, b_1, W_2, b_2, ... -- the ``named_parameters`` order of :meth:`to_module`
        ((n, dim) for a stack)."""
        pieces = []
        for w, b in zip(self.weights, self.biases):
            pieces += [w.flatten(-2), b]
        return torch.cat(pieces, dim=-1)

    @classmethod
    def from_flat(cls, theta: torch.Tensor, layer_sizes: tuple[int, ...], flatten_input: bool = False) -> "MLPParams":
        """Inverse of :meth:`flat` for the architecture ``layer_sizes = (n_0, ..., n_d)``; rows of a
        (n, dim) ``theta`` give a stack of n networks. The tensors are views of ``theta``."""
        weights, biases, start = [], [], 0
        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
            weights.append(theta[..., start:start + n_out * n_in].unflatten(-1, (n_out, n_in)))
            start += n_out * n_in
            biases.append(theta[..., start:start + n_out])
            start += n_out
        if start != theta.shape[-1]:
            raise LosstopoError(f"flat vector has {theta.shape[-1]} entries, architecture {layer_sizes} needs {start}")
        return cls(weights, biases, flatten_input)

    @classmethod
    def stack(cls, networks: "list[MLPParams]") -> "MLPParams":
        """n networks of the same architecture as one stack (leading dimension n)."""
        return cls([torch.stack(ws) for ws in zip(*(p.weights for p in networks))],
                   [torch.stack(bs) for bs in zip(*(p.biases for p in networks))], networks[0].flatten_input)

    def select(self, i: int) -> "MLPParams":
        """Network ``i`` of a stack (views)."""
        return MLPParams([w[i] for w in self.weights], [b[i] for b in self.biases], self.flatten_input)

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
# A loss of many problems at once: (a stack of n networks, the problem each one belongs to (n,)) -> (n,) losses.
BatchLossFn = Callable[[MLPParams, torch.Tensor], torch.Tensor]


class QuadraticLoss:
    """``L(θ) = 1/T Σ_μ |y_μ - f(x_μ; θ)|²``, divided by ``<(y^μ_i)²>`` if ``normalise`` (the MNIST loss of §5).

    Called on one network: the scalar loss. Called on a stack of n networks with ``index`` (n,): the
    n losses, network i against the targets of problem ``index[i]`` -- ``targets`` is (T, n_d) for
    targets every problem shares, or (B, T, n_d) for one set per problem (each normalised by its own
    ``<y²>``).
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, normalise: bool = False):
        self.inputs, self.targets = inputs, targets
        self.scale = targets.pow(2).mean(dim=(-2, -1)) if normalise else torch.ones(targets.shape[:-2],
                                                                                    dtype=targets.dtype,
                                                                                    device=targets.device)

    def __call__(self, params: MLPParams, index: torch.Tensor | None = None) -> torch.Tensor:
        targets, scale = self.targets, self.scale
        if targets.dim() == 3:
            if index is None:
                raise LosstopoError("targets of several problems: say which problem each network belongs to")
            targets, scale = targets[index], scale[index]
        return (targets - params.forward(self.inputs)).pow(2).sum(dim=-1).mean(dim=-1) / scale


    def with_inputs(self, inputs: torch.Tensor) -> "QuadraticLoss":
        """The same targets and normalisation on other inputs (e.g. whitened ones: see :class:`InputWhitening`)."""
        other = QuadraticLoss.__new__(QuadraticLoss)
        other.inputs, other.targets, other.scale = inputs, self.targets, self.scale
        return other


def quadratic_loss(inputs: torch.Tensor, targets: torch.Tensor, normalise: bool = False) -> QuadraticLoss:
    """The quadratic loss of §4.3 (toy) and §5 (MNIST, ``normalise``): see :class:`QuadraticLoss`."""
    return QuadraticLoss(inputs, targets, normalise)


def one_problem(loss_fn: LossFn) -> BatchLossFn:
    """A loss of one network as a batch loss of a single problem (each network of the stack in turn)."""
    def batch_loss(params: MLPParams, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss_fn(params.select(i)) for i in range(len(index))])

    return batch_loss


# ---------------------------------------------------------------- neurons of a hidden layer

def _check_hidden(params: MLPParams, layer: int, *neurons: int) -> None:
    if not 1 <= layer < params.depth:
        raise LosstopoError(f"layer must be a hidden layer 1..{params.depth - 1}, got {layer}")
    width = params.weights[layer - 1].shape[-2]
    for n in neurons:
        if not 0 <= n < width:
            raise LosstopoError(f"neuron {n} out of range for layer {layer} of {width} neurons")


def incoming_vectors(params: MLPParams, layer: int) -> torch.Tensor:
    """(n_k, n_{k-1}+1): row m is the parameter vector ϑ_m^(k) (Definition 1); (n, n_k, n_{k-1}+1) for a stack."""
    _check_hidden(params, layer)
    return torch.cat([params.weights[layer - 1], params.biases[layer - 1][..., None]], dim=-1)


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


# ---------------------------------------------------------------- whitened inputs: the same networks, better conditioned

@dataclass(frozen=True)
class InputWhitening:
    """A change of the first layer's coordinates that leaves every network's function unchanged.

    With ``x = mean + S z``, ``S = (Σ + ridge·λ̄·I)^½`` (Σ the inputs' covariance, λ̄ its mean eigenvalue),
    ``W₁x + b₁ = (W₁S)z + (b₁ + W₁·mean)``: descent on ``(W₁S, b₁ + W₁·mean)`` with inputs ``z`` minimises the
    same loss over the same functions, but the pixels' correlations no longer spread the curvature over
    orders of magnitude (on MNIST, L-BFGS then converges where it crawled). Layers >= 2 keep their numbers,
    so merges there (their distances, their constraint) are unchanged; a merge in layer 1 would not be."""

    mean: torch.Tensor  # (n_in,)
    scale: torch.Tensor  # S (n_in, n_in), symmetric
    inverse: torch.Tensor  # S⁻¹

    @classmethod
    def fit(cls, inputs: torch.Tensor, ridge: float = 1e-2) -> "InputWhitening":
        if ridge <= 0:
            raise LosstopoError(f"whitening needs a ridge > 0 (inputs of zero variance), got {ridge}")
        x = inputs.flatten(1).to(torch.float64)
        eigenvalues, vectors = torch.linalg.eigh(torch.cov(x.T))
        eigenvalues = eigenvalues.clamp(min=0) + ridge * eigenvalues.clamp(min=0).mean()
        scale = vectors @ torch.diag(eigenvalues.sqrt()) @ vectors.T
        inverse = vectors @ torch.diag(eigenvalues.rsqrt()) @ vectors.T
        return cls(x.mean(0), scale, inverse)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """z = S⁻¹(x - mean), flat (T, n_in), in the dtype of ``x``."""
        return ((x.flatten(1).to(torch.float64) - self.mean) @ self.inverse).to(x.dtype)

    def _first_layer(self, params: MLPParams, weight: torch.Tensor, bias: torch.Tensor) -> MLPParams:
        dtype = params.weights[0].dtype
        return MLPParams([weight.to(dtype), *params.weights[1:]], [bias.to(dtype), *params.biases[1:]],
                         flatten_input=True)

    def whiten(self, params: MLPParams) -> MLPParams:
        """The same network(s) in the whitened coordinates (inputs :meth:`inputs`)."""
        w, b = params.weights[0].to(torch.float64), params.biases[0].to(torch.float64)
        return self._first_layer(params, w @ self.scale, b + w @ self.mean)

    def restore(self, params: MLPParams) -> MLPParams:
        """Back to the original inputs' coordinates (the inverse of :meth:`whiten`)."""
        w = params.weights[0].to(torch.float64) @ self.inverse
        return self._first_layer(params, w, params.biases[0].to(torch.float64) - w @ self.mean)


# ---------------------------------------------------------------- descent "until convergence"

def minimise(params: MLPParams, loss_fn: LossFn, rule: Convergence = Convergence()) -> tuple[MLPParams, int, bool]:
    """Unconstrained descent of all parameters from ``params``; returns (params, iterations, converged)."""
    sizes, batch_loss = params.layer_sizes, one_problem(loss_fn)

    def objective(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return batch_loss(MLPParams.from_flat(rows, sizes, params.flatten_input), index)

    result = descend_batch(objective, params.detach().flat()[None], rule)
    return MLPParams.from_flat(result.x[0], sizes, params.flatten_input), result.iterations[0], result.converged[0]


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
    final_half_loss: float | None = None  # the d = 0 loss after half of ``final_max_iter`` (None: no final budget)


def _constrained(free: MLPParams, direction: torch.Tensor, distance: torch.Tensor, layer: int, l: torch.Tensor,
                 m: torch.Tensor) -> MLPParams:
    """A stack of n networks: network i is ``free[i]`` with ϑ_m = ϑ_l + d·e, e = direction/|direction|
    (``l[i]``, ``m[i]``, ``distance[i]``); row m of the free W_k, b_k is ignored."""
    vectors = incoming_vectors(free, layer)
    rows = torch.arange(len(l), device=vectors.device)
    unit = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
    target = vectors[rows, l] + distance[:, None] * unit
    is_m = torch.arange(vectors.shape[1], device=vectors.device) == m[:, None]
    vectors = torch.where(is_m[..., None], target[:, None], vectors)
    weights, biases = list(free.weights), list(free.biases)
    weights[layer - 1], biases[layer - 1] = vectors[..., :-1], vectors[..., -1]
    return MLPParams(weights, biases, free.flatten_input)


def merge_neurons_batch(starts: list[MLPParams], layer: int, pairs: list[tuple[int, int]], loss_fn: BatchLossFn,
                        n_steps: int = 200, final_ratio: float = 1e-4,
                        rule: Convergence = Convergence()) -> list[MergePath]:
    """:func:`merge_neurons` of many problems at once: start ``starts[b]`` merges ``pairs[b]`` under
    ``loss_fn(·, b)``. The starts share an architecture; every distance step descends all of them
    together (:func:`losstopo.descent.descend_batch`), each until its own convergence."""
    for start, (l, m) in zip(starts, pairs):
        _check_hidden(start, layer, l, m)
        if l == m:
            raise LosstopoError("merging needs two different neurons")
    start = MLPParams.stack([p.detach() for p in starts])
    sizes, flatten_input, device = start.layer_sizes, start.flatten_input, start.weights[0].device
    l, m = (torch.tensor(side, device=device) for side in zip(*pairs))
    problems = torch.arange(len(pairs), device=device)
    vectors = incoming_vectors(start, layer)
    offset = vectors[problems, m] - vectors[problems, l]
    initial = torch.linalg.vector_norm(offset, dim=-1)
    if bool((initial == 0).any()):
        b = int((initial == 0).nonzero()[0])
        raise LosstopoError(f"neurons {pairs[b][0]} and {pairs[b][1]} of layer {layer} already coincide (start {b})")
    free_start = start.flat()
    n_free = free_start.shape[-1]
    x = torch.cat([free_start, offset / initial[:, None]], dim=-1)

    def point(rows: torch.Tensor, index: torch.Tensor, distance: torch.Tensor) -> MLPParams:
        free = MLPParams.from_flat(rows[:, :n_free], sizes, flatten_input)
        return _constrained(free, rows[:, n_free:], distance[index], layer, l[index], m[index])

    ratios = distance_schedule(1.0, n_steps, final_ratio)[1:].tolist() + [0.0]
    initial64 = initial.to(torch.float64).cpu()
    distances, points, iterations, converged = [initial64], [start], [[0] * len(pairs)], [[True] * len(pairs)]
    # an interrupted job resumes after its last saved distance step, or inside a half of the d = 0 descent
    state = LoopState(f"merge of {len(pairs)} pairs in layer {layer} of {sizes}, {len(ratios)} steps, {rule}")
    saved, first_half = state.restore(), None
    if saved is not None:
        x, distances, iterations, converged = saved["x"].to(device), saved["distances"], saved["iterations"], \
            saved["converged"]
        points += [MLPParams.from_flat(rows.to(device), sizes, flatten_input) for rows in saved["points"]]
        first_half = saved["first_half"]

    def save() -> None:
        if state.save_due():
            state.save({"x": x, "distances": distances, "points": [p.flat() for p in points[1:]],
                        "iterations": iterations, "converged": converged, "first_half": first_half})

    for ratio in ratios[len(points) - 1:]:
        distance = (initial64 * ratio).to(device=device, dtype=x.dtype)

        def objective(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return loss_fn(point(rows, index, distance), index)

        if ratio == 0.0 and rule.final_max_iter is not None:
            if first_half is None:
                first = descend_batch(objective, x, final_half_rule(rule),
                                      state.part("final1", "the first half of the d = 0 descent"))
                first_half = {"x": first.x, "iterations": first.iterations, "loss": first.loss}
                save()
            result = descend_batch(objective, first_half["x"].to(device), final_half_rule(rule),
                                   state.part("final2", "the second half of the d = 0 descent"))
            result.iterations = [a + b for a, b in zip(first_half["iterations"], result.iterations)]
        else:
            result = descend_batch(objective, x, rule)
        x = result.x
        x[:, n_free:] /= torch.linalg.vector_norm(x[:, n_free:], dim=-1, keepdim=True)
        distances.append(initial64 * ratio)
        points.append(point(x, problems, distance).detach())
        iterations.append(result.iterations)
        converged.append(result.converged)
        save()
    final_half_losses = [None] * len(pairs) if first_half is None else first_half["loss"].tolist()
    merges = []
    for b, (pair_l, pair_m) in enumerate(pairs):
        mine = [p.select(b) for p in points]
        merges.append(MergePath(layer, pair_l, pair_m, torch.stack([d[b] for d in distances]),
                                losses_along(mine, loss_fn, b), mine, [it[b] for it in iterations],
                                [ok[b] for ok in converged], final_half_losses[b]))
    return merges


def losses_along(points: list[MLPParams], loss_fn: BatchLossFn, problem: int) -> torch.Tensor:
    """(n_points,) float64: the loss of problem ``problem`` at each of its points, one point at a time
    (so each equals the loss of that network alone, bit for bit)."""
    with torch.no_grad():
        index = torch.tensor([problem], device=points[0].weights[0].device)
        return torch.cat([loss_fn(MLPParams.stack([p]), index) for p in points]).to(torch.float64).cpu()


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
    return merge_neurons_batch([start], layer, [(l, m)], one_problem(loss_fn), n_steps, final_ratio, rule)[0]


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


def permutation_paths(starts: list[MLPParams], layer: int, pairs: list[tuple[int, int]], loss_fn: BatchLossFn,
                      n_steps: int = 200, final_ratio: float = 1e-4, rule: Convergence = Convergence(),
                      n_equalise: int = 11, whitening: InputWhitening | None = None) -> list[PermutationPath]:
    """:func:`permutation_path` of many problems at once (merges descended together, see :func:`merge_neurons_batch`).

    ``whitening`` (a :class:`QuadraticLoss`, a merge in layer >= 2): descend in whitened input coordinates;
    the paths come back in the original ones."""
    descent_starts, descent_loss = starts, loss_fn
    if whitening is not None:
        if layer < 2 or not isinstance(loss_fn, QuadraticLoss):
            raise LosstopoError("input whitening needs a merge in layer >= 2 and a QuadraticLoss")
        descent_starts = [whitening.whiten(start) for start in starts]
        descent_loss = loss_fn.with_inputs(whitening.inputs(loss_fn.inputs))
    paths = []
    merges = merge_neurons_batch(descent_starts, layer, pairs, descent_loss, n_steps, final_ratio, rule)
    for b, merge in enumerate(merges):
        if whitening is not None:  # back to the original coordinates; the start exactly as given
            merge.params = [starts[b].detach()] + [whitening.restore(p) for p in merge.params[1:]]
            merge.losses = losses_along(merge.params, loss_fn, b)
        l, m = merge.l, merge.m
        segment = equalise_output_weights(merge.params[-1], layer, l, m, n_equalise)
        first_half = merge.params + segment[1:]
        path = first_half + mirrored_half(first_half, layer, l, m)
        with torch.no_grad():
            distances = torch.tensor([float(neuron_distance(p, layer, l, m)) for p in path], dtype=torch.float64)
        middle = len(first_half) - 1
        paths.append(PermutationPath(path, losses_along(path, loss_fn, b), distances, middle,
                                     slice(len(merge.params) - 1, middle + 1), merge))
    return paths


def permutation_path(start: MLPParams, layer: int, l: int, m: int, loss_fn: LossFn, n_steps: int = 200,
                     final_ratio: float = 1e-4, rule: Convergence = Convergence(),
                     n_equalise: int = 11) -> PermutationPath:
    """The complete path from ``start`` through a permutation point to its partner σ_{l⇔m}(start) (§4.1)."""
    return permutation_paths([start], layer, [(l, m)], one_problem(loss_fn), n_steps, final_ratio, rule,
                             n_equalise)[0]


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
