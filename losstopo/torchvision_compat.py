"""Import torchvision on a CPU-only torch build.

The only torchvision 0.28.0 wheel on PyPI is a CUDA build; with the CPU torch its
import fails with ``operator torchvision::nms does not exist`` because its compiled ops
are absent while its Python side still registers meta kernels for them. Defining the two
op schemas it expects lets the import succeed (datasets and transforms work; only
``torchvision.ops.nms`` stays unavailable, which this project never uses). The shim is
applied only when the plain import fails.
"""

from __future__ import annotations

import importlib
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment = None  # keeps the library fragment alive for the process lifetime


def import_torchvision():
    global _fragment
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        try:
            _fragment.define(schema)
        except RuntimeError:
            pass  # the real compiled op is present
    return importlib.import_module("torchvision")
