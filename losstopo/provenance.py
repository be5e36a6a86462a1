"""Where a result's data came from, as fields: the kind of source, the dataset, the file (relative to the data
root's ``offline/`` folder), the images the result used and the images the source holds. Records and claims carry
:meth:`DataProvenance.as_dict`; reports print :meth:`DataProvenance.label`, the words ``Dataset.source`` says.

Built by the stages from a loaded :class:`~losstopo.data.Dataset` (:func:`provenance_of`), never read back out of a
label by the code that uses it. (This module is not imported by ``losstopo.data``, which is part of the training
code's version: a change here does not make any trained result stale.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from losstopo.data import REGISTRY, SYNTHETIC_GENERATOR, Dataset
from losstopo.errors import DataError

KINDS = ("real", "offline", "partial", "synthetic", "toy")
# Dataset.source_kind -> DataProvenance.kind
KIND_OF_SOURCE = {"torchvision": "real", "offline": "offline", "offline-partial": "partial", "synthetic": "synthetic"}
SYNTHETIC_PREFIX = "SYNTHETIC stand-in of {} (generator {}; real data unavailable: "


@dataclass(frozen=True)
class DataProvenance:
    """``kind``: real (torchvision download), offline (a complete offline copy), partial (an offline copy without a
    test set: part of its training images held out), synthetic (a labelled stand-in), toy (an experiment's own
    generated problem). ``n_train``/``n_test``: images the result used; ``source_train``/``source_test``: images the
    source holds (None for generated data, whose size follows what was asked). ``note``: why a synthetic stand-in
    was used, or a toy's description; never a machine's path."""

    kind: str
    dataset: str
    file: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    source_train: int | None = None
    source_test: int | None = None
    note: str = ""
    generator: str | None = None  # synthetic: the generator's version

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"unknown data provenance kind {self.kind!r}; known: {', '.join(KINDS)}")

    def label(self) -> str:
        """The words the report prints: exactly ``Dataset.source`` of the data this describes."""
        if self.kind == "real":
            return (f"torchvision {REGISTRY[self.dataset].torchvision_class} "
                    f"(real, {self.source_train} train / {self.source_test} test)")
        if self.kind == "offline":
            return f"offline copy {self.file} ({self.source_train} train / {self.source_test} test real images)"
        if self.kind == "partial":
            return (f"offline partial copy {self.file}: {self.source_train + self.source_test} real training images, "
                    f"split {self.source_train} train / {self.source_test} held-out test")
        if self.kind == "synthetic":
            return SYNTHETIC_PREFIX.format(self.dataset, self.generator) + f"{self.note})"
        return self.note

    def short(self) -> str:
        """A few words for a table cell: the dataset, the kind of source, the images used."""
        used = f"{self.n_train:,} train" if self.n_train is not None else ""
        kind = {"real": "real", "offline": "offline copy", "partial": "PARTIAL copy",
                "synthetic": "SYNTHETIC stand-in", "toy": "toy problem"}[self.kind]
        return f"{self.dataset}, {kind}" + (f", {used}" if used else "")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> "DataProvenance":
        return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})


def provenance_of(full: Dataset, n_train: int | None = None, n_test: int | None = None) -> DataProvenance:
    """The provenance of ``full`` (a dataset as loaded, before any subset) when a result uses its seeded subset of
    ``n_train``/``n_test`` images (None: all of them). Raises DataError if its label would differ from
    ``full.source``."""
    kind = KIND_OF_SOURCE.get(full.source_kind)
    if kind is None:
        raise DataError(f"{full.name}: unknown data source kind {full.source_kind!r}")
    available = len(full.y_train), len(full.y_test)
    used = tuple(total if n is None else min(n, total) for n, total in zip((n_train, n_test), available))
    base = DataProvenance(kind, full.name, n_train=used[0], n_test=used[1])
    if kind == "synthetic":
        prefix = SYNTHETIC_PREFIX.format(full.name, SYNTHETIC_GENERATOR)
        # The stand-in's reason is known to the loader only; the label holds it verbatim after the prefix.
        reason = full.source[len(prefix):-1] if full.source.startswith(prefix) and full.source.endswith(")") else ""
        candidates = [dataclasses.replace(base, note=reason, generator=SYNTHETIC_GENERATOR)]
    else:
        sized = dataclasses.replace(base, source_train=available[0], source_test=available[1])
        files = REGISTRY[full.name].offline_files if kind in ("offline", "partial") else (None,)
        candidates = [dataclasses.replace(sized, file=name) for name in files]
    for candidate in candidates:
        if candidate.label() == full.source:
            return candidate
    raise DataError(f"{full.name}: no data provenance gives the data source {full.source!r}")


def toy_provenance(name: str, description: str, n_train: int) -> DataProvenance:
    """An experiment's own generated problem (no dataset is loaded): its label is ``description``."""
    return DataProvenance("toy", name, n_train=n_train, n_test=0, note=description)


def claim_data(records) -> dict | list[dict] | None:
    """A claim's ``data`` field from the records its values come from (each with ``data``, a provenance dict): the
    one provenance they share, a list of the distinct ones, or None if any record predates the field."""
    found = [record.get("data") for record in records]
    if not found or any(item is None for item in found):
        return None
    distinct = list({json_key(item): item for item in found}.values())
    return distinct[0] if len(distinct) == 1 else distinct


def json_key(item: dict) -> tuple:
    return tuple(sorted(item.items()))


def short_data(data: dict | list[dict] | None, fallback: str) -> str:
    """A claim's data in a few words, from its structured ``data`` field (:func:`claim_data`); ``fallback``
    (its label) only where the records predate that field."""
    if data is None:
        return fallback
    items = data if isinstance(data, list) else [data]
    return "; ".join(DataProvenance.from_dict(item).short() for item in items)
