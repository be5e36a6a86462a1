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
