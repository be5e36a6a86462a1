"""FLOPs counted from layer shapes, and this machine's matmul peaks measured in the same run.

Convention for every row: a Conv2d or Linear layer's forward costs 2 x its multiply-adds (MACs); its
backward costs 2 x MACs for the weight gradient and, except for the first layer (whose input is the data,
which needs no gradient), 2 x MACs for the input gradient: about 3 x forward for a deep net. Biases,
activations, normalisation, the loss and the optimiser are not counted: they are elementwise, so a
fraction of the matmul peak says how well the products run.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.perf.timing import seconds_per_call
from losstopo.stacked import fast_bf16


def layer_macs(module: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """MACs per sample of each Conv2d and Linear call, in the order of the forward pass."""
    macs = []

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            macs.append(output[0].numel() * layer.in_channels // layer.groups * layer.kernel_size[0]
                        * layer.kernel_size[1])
        else:
            macs.append(layer.in_features * layer.out_features)

    module = copy.deepcopy(module).cpu().eval()  # leaves the caller's module (device, training mode) alone
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.register_forward_hook(count)
    with torch.no_grad():
        module(torch.zeros(1, *input_shape))
    return macs


def forward_macs_per_image(module: nn.Module, image_shape: tuple[int, ...]) -> int:
    return sum(layer_macs(module, image_shape))


def flops_from_macs(macs: list[int], backward: bool = True) -> int:
    """FLOPs of one sample through layers of these MACs: the forward, and (``backward``) the weight gradients and
    every input gradient but the first layer's (the module doc's convention)."""
    forward = 2 * sum(macs)
    return forward + (2 * sum(macs) + 2 * sum(macs[1:]) if backward else 0)


def step_flops_per_sample(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward + backward FLOPs of one sample through one model (the module doc's convention)."""
    return flops_from_macs(layer_macs(module, input_shape))


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """Measured FLOP/s of an n x n matmul in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = seconds_per_call(lambda: a @ b, device, repeats=repeats, warmup=1 if device.type == "cpu" else 3)
    return 2 * n ** 3 / seconds


def matmul_peaks(device: torch.device) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s}: the best of large square matmuls on ``device``. On a CPU one size measured
    once is not the peak: a first 4096 x 4096 fp32 matmul ran at 135 GFLOP/s on this 2-core machine, later ones at
    ~210, so fractions of it exceeded 1. Convolutions are not used: a 3x3 one measured up to 505 GFLOP/s counted as a
    direct convolution, more than a dense product reaches here, i.e. it does fewer multiplications than the count
    (a fraction above 1 for a convolution row means the same)."""
    sizes, repeats = ((8192,), 10) if device.type == "cuda" else ((1024, 2048, 4096), 5)
    peaks = {"fp32": max(matmul_peak(device, torch.float32, n, repeats) for n in sizes)}
    if fast_bf16(device):
        peaks["bf16"] = max(matmul_peak(device, torch.bfloat16, n, repeats) for n in sizes)
    else:  # emulated (an AVX2 EPYC: 1.1 GFLOP/s, ~1% of fp32): one small size says so; 4096 took 2 min per product
        peaks["bf16"] = matmul_peak(device, torch.bfloat16, 512, 2)
    return peaks


def rates(flops: float | None, seconds: float, precision: str | None, peaks: dict[str, float]) -> dict:
    """Achieved GFLOP/s of ``flops`` done in ``seconds`` and its fraction of the ``precision`` peak
    (both None for work without a FLOP count)."""
    if flops is None:
        return {"gflops": None, "fraction_of_peak": None}
    return {"gflops": flops / seconds / 1e9, "fraction_of_peak": flops / seconds / peaks[precision]}
