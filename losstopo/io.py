"""Atomic writes: a file either holds its complete new content or its old one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


TEMPORARY = ".*.tmp"  # the pattern of a write in progress (left behind only by a killed process)


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
