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


def load_or_discard(path: Path, what: str, weights_only: bool = True) -> Any | None:
    """The content of a file this project wrote and may recompute (a cache entry, a checkpoint, an output it
    skips on): None if it is missing; if it cannot be read (truncated, overwritten), it is deleted with one line
    saying so, and None returned, so the caller recomputes it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # noqa: BLE001 -- any unreadable file is recomputed, never trusted
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        print(f"losstopo: discarded unreadable {what} {path} ({reason}); it will be recomputed")
        path.unlink(missing_ok=True)
        return None


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
