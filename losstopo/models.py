"""The papers' architectures by name.

A name is matched against the registry's patterns; adding an architecture is one builder
function plus one ``@register`` line. Builders take ``(match, image_shape, n_classes)``.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from losstopo.errors import ConfigError

Builder = Callable[[re.Match, tuple[int, int, int], int], nn.Module]
_REGISTRY: list[tuple[re.Pattern, str, Builder]] = []


def register(pattern: str, example: str):
    def decorate(builder: Builder) -> Builder:
        _REGISTRY.append((re.compile(pattern + r"\Z"), example, builder))
        return builder
    return decorate


def build_model(name: str, image_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    for pattern, _, builder in _REGISTRY:
        match = pattern.match(name)
        if match:
            return builder(match, tuple(image_shape), n_classes)
    known = ", ".join(example for _, example, _ in _REGISTRY)
    raise ConfigError(f"unknown model {name!r}; known forms: {known}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@register(r"fc-(?P<depth>\d+)-(?P<width>\d+)", "fc-L-W (L hidden ReLU layers of W units)")
def _fully_connected(match: re.Match, image_shape, n_classes) -> nn.Module:
    depth, width = int(match["depth"]), int(match["width"])
    if depth < 1 or width < 1:
        raise ConfigError(f"fc-L-W needs L >= 1 and W >= 1, got {match.group(0)!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = int(torch.tensor(image_shape).prod())
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_classes))
    return nn.Sequential(*layers)


def _conv_block(c_in: int, c_out: int, pool: int, batch_norm: bool) -> list[nn.Module]:
    """5x5 convolution padded to keep the size, optional BatchNorm before the activation, ReLU, max-pool.

    Pooling runs before the ReLU: the same function (ReLU is monotone, so it commutes with max), about
    2x cheaper because the ReLU sees pool^2 fewer values (measured, ENVIRONMENT.md).
    """
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 5, padding=2)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers += [nn.MaxPool2d(pool), nn.ReLU()]
    return layers


# Max-pooling per convolution of CNN-K-C (barcodes paper, Tables 8-10): 32x32 inputs end at 4x4.
CNN_POOLS = {1: (8,), 2: (2, 4), 3: (2, 2, 2)}


@register(r"cnn-(?P<depth>[123])-(?P<channels>\d+)(?P<bn>-bn)?", "cnn-K-C[-bn] (K = 1, 2, 3 conv layers of C channels)")
def _cnn(match: re.Match, image_shape, n_classes) -> nn.Module:
    depth, channels, batch_norm = int(match["depth"]), int(match["channels"]), bool(match["bn"])
    if image_shape[1:] != (32, 32):
        raise ConfigError(f"{match.group(0)} expects 32x32 images (Tables 8-10), got {image_shape}")
    layers: list[nn.Module] = []
    c_in = image_shape[0]
    for pool in CNN_POOLS[depth]:
        layers += _conv_block(c_in, channels, pool, batch_norm)
        c_in = channels
    layers += [nn.Flatten(), nn.Linear(16 * channels, n_classes)]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """Conv, ReLU, Conv, plus the input; ``relu_after_sum`` as in the authors' code (not in Table 11)."""

    def __init__(self, channels: int, relu_after_sum: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu_after_sum = relu_after_sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x))) + x
        return torch.relu(out) if self.relu_after_sum else out


@register(r"resnet-t11(?P<code>-code)?", "resnet-t11[-code] (Table 11 as printed, or as in the authors' code)")
def _resnet_table_11(match: re.Match, image_shape, n_classes) -> nn.Module:
    """The ResNet of Table 11 (barcodes paper, section 3).

    As printed (``resnet-t11``): 232,138 parameters. The paper quotes 195K: the authors' code
    (``resnet-t11-code``) has no convolution in x6 (the last stage goes MaxPool -> residual block)
    and applies a ReLU after each residual sum, giving 195,210 parameters. Both end with
    MaxPool, BatchNorm(64), global average pooling and Linear(64, classes), as in that code.
    """
    as_code = bool(match["code"])
    layers: list[nn.Module] = [nn.Conv2d(image_shape[0], 16, 3, padding=1), nn.ReLU(), _Residual(16, as_code)]
    for c_in, c_out in ((16, 32), (32, 64), (64, 64)):
        layers.append(nn.MaxPool2d(2))
        if not (as_code and c_in == c_out):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        layers.append(_Residual(c_out, as_code))
    layers += [nn.MaxPool2d(2), nn.BatchNorm2d(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes)]
    return nn.Sequential(*layers)


class _WideBlock(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016): BN-ReLU-conv-BN-ReLU-conv + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


@register(r"wrn-(?P<depth>\d+)-(?P<k>\d+)", "wrn-D-k (WideResNet, D = 6n + 4, widening k)")
def _wide_resnet(match: re.Match, image_shape, n_classes) -> nn.Module:
    """WideResNet-D-k of section 4 (WRN-16-10 on CIFAR-100: about 17.1M parameters)."""
    depth, k = int(match["depth"]), int(match["k"])
    if (depth - 4) % 6 or depth < 10 or k < 1:
        raise ConfigError(f"wrn-D-k needs D = 6n + 4 >= 10 and k >= 1, got {match.group(0)!r}")
    blocks_per_group = (depth - 4) // 6
    layers: list[nn.Module] = [nn.Conv2d(image_shape[0], 16, 3, padding=1, bias=False)]
    c_in = 16
    for group, width in enumerate((16 * k, 32 * k, 64 * k)):
        for b in range(blocks_per_group):
            layers.append(_WideBlock(c_in, width, stride=2 if group > 0 and b == 0 else 1))
            c_in = width
    layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes)]
    return nn.Sequential(*layers)


@register(r"lenet", "lenet (Table 12, 28x28 grey images)")
def _lenet(match: re.Match, image_shape, n_classes) -> nn.Module:
    if tuple(image_shape) != (1, 28, 28):
        raise ConfigError(f"lenet expects 1x28x28 images (Table 12), got {image_shape}")
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_classes),
    )
