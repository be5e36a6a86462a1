"""Atomic writes: a file either holds its complete new content or its old one, never half."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


TEMPORARY = ".*.tmp"  # the pattern of a write in progress (left behind only by a killed process)


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short name of a tensor's exact content (its dtype and shape not included)."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions of any new file (mkstemp's are owner-only)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


NDARRAY_TAG = "__numpy_ndarray__"
DATACLASS_TAG = "__losstopo_dataclass__"


def load_or_discard(path: Path, what: str) -> Any | None:
    """The content of a file this project wrote and may recompute (a cache entry, a checkpoint, an output it
    skips on): None if it is missing; if it cannot be read (truncated, overwritten), it is deleted with one line
    saying so, and None returned, so the caller recomputes it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any unreadable file is recomputed, never trusted
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        print(f"losstopo: discarded unreadable {what} {path} ({reason}); it will be recomputed")
        path.unlink(missing_ok=True)
        return None


def to_safe(obj: Any) -> Any:
    """``obj`` in the types ``torch.load(weights_only=True)`` reads (tensors, containers, plain scalars):
    numpy arrays become tagged tensors, numpy scalars Python ones, losstopo's own dataclasses tagged dicts of
    their fields; anything else is refused here, at write time, rather than pickled (a pickle in a shared
    folder can run code when it is loaded)."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass, but pickled as numpy's
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("cannot store a numpy array of Python objects")
        writable = obj if obj.flags.writeable else obj.copy()  # a Ray result is read-only: torch warns on sharing it
        return {NDARRAY_TAG: torch.from_numpy(np.ascontiguousarray(writable))}
    if isinstance(obj, dict):
        return {key: to_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(value) for value in obj)
    if dataclasses.is_dataclass(obj) and type(obj).__module__.startswith("losstopo."):
        return {DATACLASS_TAG: f"{type(obj).__module__}:{type(obj).__qualname__}",
                "fields": {f.name: to_safe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    raise TypeError(f"cannot store a {type(obj).__name__} without pickling it; return tensors, numbers, "
                    f"strings, numpy arrays, lists, tuples or dicts")


def from_safe(obj: Any) -> Any:
    """The inverse of :func:`to_safe`."""
    if isinstance(obj, dict):
        if set(obj) == {NDARRAY_TAG}:
            return obj[NDARRAY_TAG].numpy()
        if set(obj) == {DATACLASS_TAG, "fields"}:
            return _dataclass(obj[DATACLASS_TAG])(**from_safe(obj["fields"]))
        return {key: from_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(value) for value in obj)
    return obj


def _dataclass(name: str) -> type:
    """A losstopo dataclass by ``module:qualname``; nothing else is ever constructed from a stored name."""
    module, _, qualname = name.partition(":")
    if not module.startswith("losstopo."):
        raise TypeError(f"refusing to rebuild {name}: not a losstopo dataclass")
    cls = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"refusing to rebuild {name}: not a losstopo dataclass")
    return cls


def save_torch(obj: Any, path: Path) -> None:
    _atomic(path, lambda handle: torch.save(obj, handle))


def save_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable, allow_nan=True)
    _atomic(path, lambda handle: handle.write(text.encode()))


def save_text(text: str, path: Path) -> None:
    _atomic(path, lambda handle: handle.write(text.encode()))


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def remove_orphans(directory: Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process left in ``directory`` (recursively)."""
    orphans = sorted(Path(directory).rglob(TEMPORARY)) if Path(directory).is_dir() else []
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans
