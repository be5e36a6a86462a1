"""What every stage and the report of the experiment share: its variants (the toy teacher, and the MNIST
teachers of each width), their data and settings, and the saved records they skip recomputing."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.permutation_barrier.schema import MNISTTeachersConfig, PermutationBarrierConfig, ToyConfig
from losstopo.io import load_json
from losstopo.job_data import DataRequest
from losstopo.provenance import toy_provenance

NAME = "permutation_barrier"

TOY_KEY = "toy"
TOY_LAYER = 1  # the toy's only hidden layer
MNIST_LAYER = 2  # "two neurons ... in the second hidden layer" (§5)
TEACHER_SEED = 0  # teacher k of every width trains from seed TEACHER_SEED + k (and its own minibatch order)
TOY_DTYPE = torch.float64  # the toy is tiny: double precision costs nothing
# MNIST paths run in the teachers' float32: the loss noise floor (~1e-13) is far below the barriers
# (>= 1e-7 in our runs) and float32 halves the CPU cost of the descent.
MNIST_DTYPE = torch.float32


def mnist_key(width: int) -> str:
    return f"mnist-H{width}"


def variant_keys(config: PermutationBarrierConfig) -> list[str]:
    return [TOY_KEY] + [mnist_key(h) for h in config.mnist.widths]


def toy_source(cfg: ToyConfig) -> str:
    return (f"synthetic toy (the paper's own setup): {cfg.n_inputs} standard-normal 2-D inputs, "
            f"teacher 2-{cfg.hidden}-1 drawn with seed {cfg.seed}")


def toy_data(cfg: ToyConfig) -> dict:
    """The toy's provenance (its records' ``data``): its label is :func:`toy_source`."""
    return toy_provenance(TOY_KEY, toy_source(cfg), cfg.n_inputs).as_dict()


def saved_record(path: Path, address: str) -> dict | None:
    """The saved record at ``path`` if it was made with the same settings (content address)."""
    if path.is_file():
        record = load_json(path)
        if record.get("address") == address:
            return record
    return None


def teacher_request(cfg: MNISTTeachersConfig) -> DataRequest:
    return DataRequest("mnist", cfg.train_subset, None, TEACHER_SEED)


def path_request(cfg: MNISTTeachersConfig) -> DataRequest:
    """Same seed as the teachers' subset: the path inputs are nested in their training images."""
    return DataRequest("mnist", cfg.path_subset, 0, TEACHER_SEED)


def datasets(config) -> list[str]:
    """The datasets this experiment's stages read (checked by `losstopo validate`)."""
    return ["mnist"]  # the toy teacher needs no dataset
