"""One epoch of minibatches with random-crop + flip augmentation: device-resident tensors vs a DataLoader.

The fast path keeps the whole dataset as one tensor on the device and augments whole batches
there; the baseline is torchvision transforms per image behind a ``DataLoader``.
"""

from __future__ import annotations

import importlib

import torch

from benchmarks.perf.timing import seconds_per_call
from losstopo.augment import random_crop_flip
from losstopo.data import Dataset
from losstopo.torchvision_compat import import_torchvision


def data_loading_benchmark(data: Dataset, batch_size: int = 128) -> dict:
    device = data.x_train.device
    import_torchvision()
    transforms = importlib.import_module("torchvision.transforms.v2")
    x_cpu, y_cpu = data.x_train.cpu(), data.y_train.cpu()
    per_image = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(y_cpu)

        def __getitem__(self, i):
            return per_image(x_cpu[i]), y_cpu[i]

    loader = torch.utils.data.DataLoader(Images(), batch_size=batch_size, shuffle=True)
    generator = torch.Generator(device=device).manual_seed(0)

    def with_loader():
        for x, y in loader:
            x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def resident():
        order = torch.randperm(len(data.y_train), device=device, generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            random_crop_flip(data.x_train[idx], padding=4, generator=generator)

    baseline = seconds_per_call(with_loader, device, repeats=1)
    fast = seconds_per_call(resident, device, repeats=1)
    return {"benchmark": f"augmented epoch, {data.name}, {len(data.y_train)} images, batch {batch_size}",
            "baseline_s": baseline, "fast_s": fast, "speedup": baseline / fast, "device": str(device)}
