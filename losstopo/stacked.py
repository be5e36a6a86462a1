"""K networks of one architecture as one batched function of flat parameter vectors.

``thetas: (k, d)`` holds k parameter vectors of a template module; ``torch.func.functional_call``
under ``vmap`` evaluates all k in one forward/backward. This is the engine that lets the
minima of one architecture train together and all points of a path share one evaluation.

BatchNorm: a point on a path is a set of weights whose activation statistics nobody has
measured; using an endpoint's running statistics there is wrong (the loss along the path would
be that of a different function). So the stacked template's BatchNorm layers keep no running
statistics and always normalise with the statistics of the batch being evaluated, recomputed
for each parameter vector: a training minibatch while training, an evaluation chunk
(``DatasetLoss.chunk_size`` images, by default the whole set up to 10,000 images) when measuring
a loss. This is what curve-finding code does with ``update_bn`` followed by evaluation, up to
the biased/unbiased variance and the chunking.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.func
from torch import nn
from torch.func import functional_call, vmap

from losstopo.augment import random_crop_flip


@dataclass(frozen=True)
class ParameterLayout:
    """Where each named parameter of a module lives in a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParameterLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def dim(self) -> int:
        return sum(s.numel() for s in self.shapes)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta: (d,) -> {name: view of shape}; differentiable."""
        pieces = torch.split(theta, [s.numel() for s in self.shapes])
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}

    def flatten(self, module: nn.Module) -> torch.Tensor:
        params = dict(module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])


class StackedModel:
    """Evaluates ``k`` parameter vectors of one template module on shared or per-model inputs."""

    def __init__(self, module: nn.Module, strategy: str = "auto", channels_last: bool = False):
        """``strategy``: "vmap" (one batched kernel per layer), "loop" (one model after another, same
        function), or "auto": vmap except for convolutional nets on CPU, where PyTorch's batched
        convolution is slower than a loop (measured: benchmarks/RESULTS.md), and for Linear/ReLU stacks on a
        shared batch, where the first layer of all k models is one GEMM (``_mlp_shared``).

        ``channels_last``: run convolutions in NHWC layout (inputs and 4-D weights), the fast layout
        for tensor cores; it implies the loop strategy, since a vmapped convolution becomes one
        grouped NCHW convolution whose layout cannot be chosen. Same function either way. Without it,
        evaluations (no gradients) of a looped conv net on CPU still run NHWC where the images have several
        channels (:meth:`_nhwc_evaluation`)."""
        if strategy not in ("auto", "vmap", "loop"):
            raise ValueError(f"strategy must be auto, vmap or loop, got {strategy!r}")
        self.strategy = "loop" if channels_last else strategy
        self.channels_last = channels_last
        self.module = copy.deepcopy(module)
        self.has_conv = any(isinstance(m, nn.Conv2d) for m in self.module.modules())
        self.has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules())
        torch.func.replace_all_batch_norm_modules_(self.module)  # batch statistics only, see module doc
        module = self.module
        self.layout = ParameterLayout.of(module)
        self.buffers = dict(module.named_buffers())

        def single(theta, x, nhwc=self.channels_last):
            weights = self.layout.unflatten(theta)
            if nhwc:
                weights = {k: w.contiguous(memory_format=torch.channels_last) if w.dim() == 4 else w
                           for k, w in weights.items()}
                x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            return functional_call(self.module, (weights, self.buffers), (x,))

        self._single = single
        self._shared = vmap(single, in_dims=(0, None))  # same batch for every model
        self._mlp_layers = mlp_linear_layers(module)
        self._mlp_flattens = isinstance(next(iter(module.children()), None), nn.Flatten)
        self._per_model = vmap(single, in_dims=(0, 0))  # a batch per model

    def _use_loop(self, device: torch.device) -> bool:
        return self.strategy == "loop" or (self.strategy == "auto" and self.has_conv and device.type == "cpu")

    @property
    def dim(self) -> int:
        return self.layout.dim

    def init_thetas(self, seeds: list[int], device=None) -> torch.Tensor:
        """(k, d): the template's default initialisation under each seed (distinct seeds -> distinct minima)."""
        rows = []
        for seed in seeds:
            torch.manual_seed(seed)
            for layer in self.module.modules():
                if layer is not self.module and hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            rows.append(self.layout.flatten(self.module))
        return torch.stack(rows).to(device)

    def logits(self, thetas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """thetas (k, d), x (B, ...) -> (k, B, n_classes)."""
        if self._use_loop(thetas.device):
            nhwc = self.channels_last or self._nhwc_evaluation(x)
            return torch.stack([self._single(theta, x, nhwc) for theta in thetas])
        if self._mlp_layers is not None and self.strategy == "auto" and (self._mlp_flattens or x.dim() == 2):
            return self._mlp_shared(thetas, x)
        return self._shared(thetas, x)

    def _mlp_shared(self, thetas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A Flatten/Linear/ReLU stack on one shared batch: the first layer of all k models is one GEMM
        ``x @ [W_1 ... W_k]^T`` (and so is its weight gradient, ``x^T @ [dY_1 ... dY_k]``); under vmap it
        would be k products of the same input, and the hidden layers would run in strided layouts."""
        k, batch = len(thetas), len(x)
        (w_name, b_name), *rest = self._mlp_layers
        weights = self._mlp_weights(thetas)
        width, n_in = weights[w_name].shape[1:]
        h = nn.functional.linear(x.reshape(batch, n_in), weights[w_name].reshape(k * width, n_in),
                                 weights[b_name].reshape(-1))
        return self._mlp_hidden(weights, h.view(batch, k, width).transpose(0, 1).contiguous(), rest)  # (k, B, W)

    def _mlp_per_model(self, thetas: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The same stack on a batch per model: every layer one batched product (no vmap dispatch)."""
        (w_name, b_name), *rest = self._mlp_layers
        weights = self._mlp_weights(thetas)
        h = torch.baddbmm(weights[b_name].unsqueeze(1), xs.reshape(*xs.shape[:2], -1), weights[w_name].transpose(1, 2))
        return self._mlp_hidden(weights, h, rest)

    def _mlp_weights(self, thetas: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: (k, *shape)} views of the k parameter vectors."""
        pieces = torch.split(thetas, [s.numel() for s in self.layout.shapes], dim=1)
        return {name: piece.reshape(len(thetas), *shape)
                for name, piece, shape in zip(self.layout.names, pieces, self.layout.shapes)}

    @staticmethod
    def _mlp_hidden(weights: dict[str, torch.Tensor], h: torch.Tensor, layers: list[tuple[str, str]]) -> torch.Tensor:
        """ReLU then Linear for each of ``layers``, on the first layer's pre-activations h (k, B, W)."""
        for w_name, b_name in layers:
            h = torch.baddbmm(weights[b_name].unsqueeze(1), torch.relu(h), weights[w_name].transpose(1, 2))
        return h

    def _nhwc_evaluation(self, x: torch.Tensor) -> bool:
        """NHWC forwards without gradients on CPU for images of several channels: the CNN paths stage of the ci
        profile ran 1.8x faster (149 -> 84 s, same maxima to 1e-7) on an AVX2 EPYC; forwards of CNN-2-64, ResNet and
        WRN-16-1 1.3-1.5x; with gradients, and on 1-channel LeNet, no gain or a loss (benchmarks/RESULTS.md)."""
        return self.has_conv and x.device.type == "cpu" and x.dim() == 4 and x.shape[1] > 1 and not torch.is_grad_enabled()

    def logits_per_model(self, thetas: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """thetas (k, d), xs (k, B, ...) -> (k, B, n_classes)."""
        if self._use_loop(thetas.device):
            return torch.stack([self._single(theta, x) for theta, x in zip(thetas, xs)])
        if self._mlp_layers is not None and self.strategy == "auto" and (self._mlp_flattens or xs.dim() == 3):
            return self._mlp_per_model(thetas, xs)
        return self._per_model(thetas, xs)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    except OSError:
        return set()


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds up matrix products on ``device``: CUDA, or a CPU with AMX tiles or AVX512-BF16
    instructions (a Xeon's AMX bf16 matmul ran ~5x its fp32 one, an EPYC's AVX512-BF16 one ~2x;
    benchmarks/RESULTS.md). Elsewhere bf16 on CPU is emulated or converted and slower than fp32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    init_amx = getattr(torch._C._cpu, "_init_amx", None)  # private, present in torch 2.1 .. 2.13
    return (init_amx is not None and bool(init_amx())) or "avx512_bf16" in cpu_flags()


def mlp_linear_layers(module: nn.Module) -> list[tuple[str, str]] | None:
    """(weight, bias) names of the Linear layers of an ``nn.Sequential`` of the form
    [Flatten], Linear, ReLU, Linear, ReLU, ..., Linear; None for any other module."""
    if not isinstance(module, nn.Sequential):
        return None
    children = list(module.named_children())
    if children and isinstance(children[0][1], nn.Flatten) and children[0][1].start_dim == 1:
        children = children[1:]
    linear = children[0::2]
    if not children or len(children) % 2 == 0 or any(not isinstance(m, nn.ReLU) for _, m in children[1::2]):
        return None
    if any(not isinstance(m, nn.Linear) or m.bias is None for _, m in linear):
        return None
    return [(f"{name}.weight", f"{name}.bias") for name, _ in linear]


def cross_entropy_per_model(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (k, B, C), y (B,) or (k, B) -> (k,) mean cross-entropy of each model."""
    k, batch, n_classes = logits.shape
    y = y.expand(k, batch) if y.dim() == 1 else y
    logits = logits.float()
    # logsumexp - the true class's logit: the cross-entropy, ~3x faster forward + backward on CPU than
    # F.cross_entropy for 10 classes (whose log_softmax kernel is slow on short rows; measured)
    losses = torch.logsumexp(logits, dim=-1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return losses.mean(dim=1)


class DatasetLoss:
    """``loss_fn(thetas) -> (k,)``: mean cross-entropy of each parameter vector over a whole dataset.

    The data stays resident on its device; evaluation runs in chunks of ``chunk_size`` samples
    (and ``max_models`` models) so that memory stays bounded while gradients still flow.
    ``minibatch(generator)`` returns the same kind of function on one random batch of
    ``batch_size`` samples, which the path optimiser uses for stochastic gradients.
    """

    def __init__(self, stacked: StackedModel, x: torch.Tensor, y: torch.Tensor, *,
                 chunk_size: int = 10000, max_models: int = 64, batch_size: int | None = None,
                 autocast_dtype: torch.dtype | None = None, minibatch_autocast_dtype: torch.dtype | None = None,
                 augment: bool = False):
        """``minibatch_autocast_dtype`` (default: ``autocast_dtype``) applies to the minibatch losses
        only, e.g. bf16 optimisation steps while the losses reported over the whole data stay fp32.
        ``augment``: random crop + flip of every minibatch, on the data's device (training as the minima
        were trained); the losses over the whole data are never augmented."""
        self.stacked, self.x, self.y = stacked, x, y
        self.chunk_size, self.max_models, self.batch_size = chunk_size, max_models, batch_size
        self.autocast_dtype = autocast_dtype
        self.minibatch_autocast_dtype = minibatch_autocast_dtype or autocast_dtype
        self.augment = augment

    def __call__(self, thetas: torch.Tensor) -> torch.Tensor:
        return self._evaluate(thetas, self.x, self.y)[0]

    def loss_and_accuracy(self, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy (as ``self(thetas)`` without gradients) and accuracy over the whole data, from one
        forward pass per chunk."""
        with torch.no_grad():
            return self._evaluate(thetas, self.x, self.y, with_accuracy=True)

    def minibatch(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
        full = self.batch_size is None or self.batch_size >= len(self.y)
        if full and not self.augment:
            return self
        x, y = self.x, self.y
        if not full:
            idx = torch.randint(len(self.y), (self.batch_size,), generator=generator).to(self.y.device)
            x, y = x[idx], y[idx]
        if self.augment:  # crops and flips drawn on the device, seeded from the (CPU) minibatch generator
            seed = int(torch.randint(2 ** 62, (1,), generator=generator))
            x = random_crop_flip(x, generator=torch.Generator(device=x.device).manual_seed(seed))
        return lambda thetas: self._evaluate(thetas, x, y, autocast_dtype=self.minibatch_autocast_dtype)[0]

    def _evaluate(self, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  autocast_dtype: torch.dtype | None = None, with_accuracy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(k,) mean cross-entropy and (k,) accuracy (zeros unless ``with_accuracy``) of each model over (x, y)."""
        autocast_dtype = autocast_dtype or self.autocast_dtype
        losses, accuracies = [], []
        for model_rows in torch.split(thetas, self.max_models):
            loss_sum = torch.zeros(len(model_rows), device=thetas.device)
            correct = torch.zeros(len(model_rows), device=thetas.device)
            for start in range(0, len(y), self.chunk_size):
                xb, yb = x[start:start + self.chunk_size], y[start:start + self.chunk_size]
                with torch.autocast(xb.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = self.stacked.logits(model_rows, xb)
                if with_accuracy:
                    correct = correct + (logits.argmax(-1) == yb).float().sum(dim=1)
                loss_sum = loss_sum + cross_entropy_per_model(logits, yb) * len(yb)
            losses.append(loss_sum / len(y))
            accuracies.append(correct / len(y))
        return torch.cat(losses), torch.cat(accuracies)
