"""WideResNet training throughput (images/s) and, on CUDA, the fraction of the measured bf16 peak.

The peak is measured in the same run with a large bf16 matmul, so the fraction does not depend on a
datasheet. The training step is the project's: stacked parameters, device-resident batch, on-device
crop/flip, bf16 autocast and channels-last on CUDA. FLOPs per image are counted from the model's
convolution and linear layers (forward MACs x 2 x 3 for forward + backward).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.perf.timing import seconds_per_call
from losstopo.augment import random_crop_flip
from losstopo.models import build_model
from losstopo.stacked import StackedModel, cross_entropy_per_model


def forward_macs_per_image(module: nn.Module, image_shape: tuple[int, int, int]) -> int:
    macs = 0

    def count(layer, inputs, output):
        nonlocal macs
        if isinstance(layer, nn.Conv2d):
            macs += output[0].numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module.eval()(torch.zeros(1, *image_shape))
    for hook in hooks:
        hook.remove()
    return macs


def bf16_matmul_peak(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Measured FLOP/s of a large bf16 matmul (CUDA only)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = seconds_per_call(lambda: a @ b, device, repeats=repeats, warmup=3)
    return 2 * n ** 3 / seconds


def wrn_throughput_benchmark(model_name: str, device: torch.device, batch_size: int = 128, n_classes: int = 100,
                             repeats: int = 5) -> dict:
    image_shape = (3, 32, 32)
    module = build_model(model_name, image_shape, n_classes)
    flops_per_image = 6 * forward_macs_per_image(module, image_shape)
    cuda = device.type == "cuda"
    stacked = StackedModel(module.to(device), channels_last=cuda)
    params = torch.nn.Parameter(stacked.init_thetas([0], device=device))
    optimizer = torch.optim.SGD([params], lr=0.03, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch_size, *image_shape, device=device)
    y = torch.randint(n_classes, (batch_size,), device=device)

    def step():
        xs = random_crop_flip(x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = stacked.logits_per_model(params, xs[None])
        loss = cross_entropy_per_model(logits, y[None]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = seconds_per_call(step, device, repeats=repeats, warmup=2)
    images_per_s = batch_size / seconds
    result = {"benchmark": f"{model_name} training step, batch {batch_size}", "images_per_s": images_per_s,
              "achieved_flops": images_per_s * flops_per_image, "flops_per_image": flops_per_image,
              "device": str(device)}
    if cuda:
        peak = bf16_matmul_peak(device)
        result |= {"bf16_peak_flops": peak, "fraction_of_peak": result["achieved_flops"] / peak}
    return result
