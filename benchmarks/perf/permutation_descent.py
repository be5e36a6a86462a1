"""Permutation-path merge descents: all paths of a batch descending together vs one path after another.

The baseline is the library's own merge run path by path (``merge_neurons``: a problem alone, its
own forward and backward per evaluation). The fast path descends every path in the same tensor
operations (``merge_neurons_batch``): the toy's pairs of one teacher, or the teachers of one width.
Both run a fixed number of iterations (no early stop) from the same starts. How often L-BFGS evaluates the
loss depends on its line searches, so the FLOPs are counted as the descents run (:class:`CountedLoss`): each
network evaluated with a gradient costs a forward and a backward pass, each one evaluated without, a forward.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable

import torch

from benchmarks.perf.flops import flops_from_macs
from benchmarks.perf.timing import seconds_per_call
from benchmarks.permutation_barrier.schema import ToyConfig
from benchmarks.permutation_barrier.teachers import draw_toy_teacher, own_outputs_loss, teachers_from_thetas
from benchmarks.permutation_barrier.variants import MNIST_DTYPE, MNIST_LAYER, TOY_LAYER
from losstopo.data import REGISTRY
from losstopo.descent import Convergence
from losstopo.models import build_model
from losstopo.permutation import (MergePath, MLPParams, QuadraticLoss, merge_candidates, merge_neurons,
                                  merge_neurons_batch)
from losstopo.stacked import StackedModel


@dataclasses.dataclass
class CountedLoss:
    """``loss`` of MLPs with per-sample ``macs`` on ``n_inputs`` inputs, adding up the FLOPs of every network it
    evaluates (``benchmarks.perf.flops``' convention). A loss that needs a gradient is taken to get its backward
    pass (the descent differentiates every loss it evaluates with autograd on)."""

    loss: QuadraticLoss
    n_inputs: int
    macs: list[int]
    flops: int = 0

    def __call__(self, params: MLPParams, index: torch.Tensor | None = None) -> torch.Tensor:
        losses = self.loss(params, index)
        self.flops += losses.numel() * self.n_inputs * flops_from_macs(self.macs, backward=losses.requires_grad)
        return losses

    def counting(self, call: Callable[[], object]) -> int:
        """The FLOPs of the evaluations made during ``call()``."""
        self.flops = 0
        call()
        return self.flops


def mlp_macs(layer_sizes: tuple[int, ...]) -> list[int]:
    """Multiply-adds per sample of each layer of an MLP with these layer sizes."""
    return [n_in * n_out for n_in, n_out in zip(layer_sizes, layer_sizes[1:])]


@dataclasses.dataclass
class DescentProblems:
    """Teachers (each its own target, as in the stage), the pair each one merges, and their loss."""

    teachers: list[MLPParams]
    layer: int
    pairs: list[tuple[int, int]]
    loss_fn: CountedLoss

    def merge(self, rule: Convergence) -> list[MergePath]:
        """All merges descending together, one distance and then d = 0."""
        return merge_neurons_batch(self.teachers, self.layer, self.pairs, self.loss_fn, 2, rule=rule)


def descent_problems(model: str, dataset: str, n_paths: int, n_inputs: int, device: torch.device) -> DescentProblems:
    """``toy-H``: the first ``n_paths`` pairs of one toy teacher (float64); ``fc-2-H`` on ``dataset``: ``n_paths``
    freshly initialised teachers on random inputs, each merging its most cosine-similar pair of layer 2."""
    if dataset == "toy":
        hidden = int(model.removeprefix("toy-"))
        teacher, inputs = draw_toy_teacher(ToyConfig(hidden=hidden, n_inputs=n_inputs))
        teachers, layer, normalise = [teacher] * n_paths, TOY_LAYER, False
        pairs = list(itertools.islice(itertools.combinations(range(hidden), 2), n_paths))
    else:
        spec = REGISTRY[dataset]
        module = build_model(model, spec.image_shape, spec.n_classes)
        sizes = [m.in_features for m in module.modules() if isinstance(m, torch.nn.Linear)]
        thetas = StackedModel(module).init_thetas(list(range(n_paths))).to(MNIST_DTYPE)
        teachers = teachers_from_thetas(thetas, [*sizes, spec.n_classes])
        inputs, layer, normalise = torch.randn(n_inputs, sizes[0], dtype=MNIST_DTYPE), MNIST_LAYER, True
        pairs = [merge_candidates(t, layer) for t in teachers]
    teachers, inputs = [t.to(device=device) for t in teachers], inputs.to(device)
    loss = CountedLoss(own_outputs_loss(teachers, inputs, normalise), n_inputs, mlp_macs(teachers[0].layer_sizes))
    return DescentProblems(teachers, layer, pairs, loss)


def one_by_one(problems: DescentProblems, rule: Convergence) -> list[MergePath]:
    """The baseline: each merge descending alone, one after another."""
    return [merge_neurons(teacher, problems.layer, l, m, lambda p, b=b: problems.loss_fn(p, b), 2, rule=rule)
            for b, (teacher, (l, m)) in enumerate(zip(problems.teachers, problems.pairs))]


def fixed_iterations(rule: Convergence, iterations: int) -> Convergence:
    """``rule`` that runs exactly ``iterations`` iterations per descent (no stopping test can fire)."""
    return dataclasses.replace(rule, max_iter=iterations, grad_tol=0.0, rel_tol=0.0, abs_tol=-1.0)


def permutation_descent_benchmark(model: str, dataset: str, n_paths: int, n_inputs: int, device: torch.device,
                                  iterations: int = 5, repeats: int = 3) -> dict:
    if dataset == "toy":
        device = torch.device("cpu")  # where the stage runs the toy
    problems = descent_problems(model, dataset, n_paths, n_inputs, device)
    rule = fixed_iterations(Convergence(), iterations)
    one_after_another = functools.partial(one_by_one, problems, rule)
    # Same paths before timing anything (float32 products in another order differ by rounding only).
    fast_paths, plain_paths = problems.merge(rule), one_after_another()
    for fast, plain in zip(fast_paths, plain_paths):
        scale = float(plain.losses.abs().max())
        if float((fast.losses - plain.losses).abs().max()) > 1e-3 * scale:
            raise AssertionError(f"batched and one-by-one merges differ: {fast.losses} vs {plain.losses}")
    baseline = seconds_per_call(one_after_another, device, repeats)
    fast = seconds_per_call(lambda: problems.merge(rule), device, repeats)
    # the toy runs in float64, which has no measured peak: no FLOP count
    counts = {} if dataset == "toy" else {
        "flops": problems.loss_fn.counting(lambda: problems.merge(rule)),
        "baseline_flops": problems.loss_fn.counting(one_after_another), "precision": "fp32"}
    return {"benchmark": f"permutation merge descent, {n_paths} paths, {model}, {n_inputs} inputs, "
                         f"2 x {iterations} L-BFGS iterations",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device)} | counts
