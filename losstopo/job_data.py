"""The images a stage's jobs read: each dataset loaded once per process, checked before any training, and
handed to a job as the seeded subset it asks for, with the provenance its records store."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Iterable

import torch

from losstopo.config import DataConfig, Params
from losstopo.data import Dataset, check_available, load_dataset, resolve_root
from losstopo.provenance import DataProvenance, provenance_of

@dataclass(frozen=True)
class DataRequest:
    """Which images a job uses: a seeded subset of a named dataset (None: all)."""

    name: str
    n_train: int | None
    n_test: int | None
    seed: int = 0


class DataCache:
    """Each dataset is read from disk once per process and kept in memory; jobs get their subset on
    their device."""

    def __init__(self, data: DataConfig, names: Iterable[str] = ()):
        """``names``: every dataset the stage will use, checked now, so that a missing one stops the
        stage with its one-line error before any training."""
        self.data, self._full = data, {}
        self.stand_ins = [name for name in sorted(set(names))
                          if check_available(name, root=data.root, allow_partial=data.allow_partial,
                                             allow_synthetic=data.allows_synthetic(name))]

    def get(self, request: DataRequest, device: torch.device | str = "cpu") -> Dataset:
        return self._loaded(request).subset(request.n_train, request.n_test, seed=request.seed).to(device)

    def provenance(self, request: DataRequest) -> DataProvenance:
        """Where the images of :meth:`get` come from, as fields (what a record stores beside the label)."""
        return provenance_of(self._loaded(request), request.n_train, request.n_test)

    def _loaded(self, request: DataRequest) -> Dataset:
        """The whole dataset (as loaded) that ``request``'s subset is drawn from."""
        cached = self._full.get(request.name)
        # A synthetic stand-in is generated only as large as asked (its prefixes are stable).
        if cached is None or (cached.iid_order and not _covers(cached, request.n_train, request.n_test)):
            cfg = self.data
            self._full[request.name] = load_dataset(
                request.name, root=cfg.root, allow_partial=cfg.allow_partial,
                allow_synthetic=cfg.allows_synthetic(request.name),
                synthetic_sizes=(request.n_train, request.n_test))
        return self._full[request.name]


def _covers(dataset: Dataset, n_train: int | None, n_test: int | None) -> bool:
    return (n_train is not None and n_train <= len(dataset.y_train)
            and n_test is not None and n_test <= len(dataset.y_test))


_PROCESS_DATA: dict[DataConfig, DataCache] = {}


def job_dataset(data: DataConfig, request: DataRequest, device: torch.device | str = "cpu") -> Dataset:
    """A dataset subset from this process's cache: the stage's driver and every job it runs in the same
    process (local executor) or on the same Ray worker share one copy per dataset."""
    return _process_cache(data).get(request, device)


def job_provenance(data: DataConfig, request: DataRequest) -> DataProvenance:
    """The provenance of :func:`job_dataset`'s images (the stage records store ``.as_dict()`` as ``data``)."""
    return _process_cache(data).provenance(request)


def _process_cache(data: DataConfig) -> DataCache:
    if data not in _PROCESS_DATA:
        _PROCESS_DATA[data] = DataCache(data)
    return _PROCESS_DATA[data]


def stage_data(params: Params, names: Iterable[str]) -> DataConfig:
    """The stage's data settings with the root made absolute (jobs may run in another working directory
    or on another node), after checking that every dataset in ``names`` can be loaded."""
    root = resolve_root(params.data.root)
    data = dataclasses.replace(params.data, root=str(root.resolve()) if root else None)
    stand_ins = DataCache(data, names).stand_ins
    if stand_ins:
        print(f"losstopo: SYNTHETIC stand-ins (no offline copy; data.allow_synthetic names them): "
              f"{', '.join(stand_ins)}", file=sys.stderr)
    return data
