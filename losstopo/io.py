"""Atomic writes: a file either holds its complete new content or its old one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
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
