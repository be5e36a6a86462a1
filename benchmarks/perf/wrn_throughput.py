"""WideResNet training throughput (images/s) and its fraction of the matmul peak measured in the same run.

The training step is the project's: stacked parameters, device-resident batch, on-device crop/flip, bf16
autocast and channels-last on CUDA (fp32 elsewhere, compared with the fp32 peak). FLOPs per image are counted
from the model's convolution and linear layers (``benchmarks.perf.flops``: forward + backward).
"""

from __future__ import annotations

import torch

from benchmarks.perf.flops import rates, step_flops_per_sample
from benchmarks.perf.timing import seconds_per_call
from losstopo.augment import random_crop_flip
from losstopo.models import build_model
from losstopo.stacked import StackedModel, cross_entropy_per_model


def wrn_throughput_benchmark(model_name: str, device: torch.device, peaks: dict[str, float], batch_size: int = 128,
                             n_classes: int = 100, repeats: int = 5) -> dict:
    """``peaks``: ``flops.matmul_peaks(device)``."""
    image_shape = (3, 32, 32)
    module = build_model(model_name, image_shape, n_classes)
    flops_per_image = step_flops_per_sample(module, image_shape)
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
    precision = "bf16" if cuda else "fp32"
    return {"benchmark": f"{model_name} training step, batch {batch_size}", "images_per_s": images_per_s,
            "achieved_flops": images_per_s * flops_per_image, "flops_per_image": flops_per_image,
            "device": str(device), "precision": precision, f"{precision}_peak_flops": peaks[precision],
            **rates(batch_size * flops_per_image, seconds, precision, peaks)}
