"""Resuming a long loop inside a job where it was interrupted.

A job of an hour (the permutation paths of one width) would otherwise start over when its process is killed: the
job cache keeps only finished jobs. Such a job runs inside :func:`job_scratch`, a directory named by its address
beside the stage's job cache; each of its loops that can resume asks for its :class:`LoopState` and saves its state
there every ``LOSSTOPO_SAVE_EVERY_S`` seconds (default 300). The rerun of the same job (the same address: the same
settings, shared inputs and code) finds the state and continues from that step, so the result is the one the
uninterrupted job would have computed. Outside a job's scratch nothing is saved; the stage removes the scratch
directories with its job cache when it completes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

from losstopo.errors import LosstopoError
from losstopo.io import load_or_discard, save_torch

SAVE_EVERY_S = 300.0
_NEXT_IN_JOB = object()  # a loop's file: the next one of the running job's scratch
_SCRATCH: ContextVar[tuple[Path, list[int]] | None] = ContextVar("losstopo_job_scratch", default=None)


def save_interval() -> float:
    """Seconds between two saves of a loop's state (``LOSSTOPO_SAVE_EVERY_S``; 0 saves at every step)."""
    text = os.environ.get("LOSSTOPO_SAVE_EVERY_S")
    if text is None:
        return SAVE_EVERY_S
    try:
        seconds = float(text)
    except ValueError:
        raise LosstopoError(f"LOSSTOPO_SAVE_EVERY_S must be a number of seconds, not {text!r}") from None
    if not seconds >= 0:
        raise LosstopoError(f"LOSSTOPO_SAVE_EVERY_S must be >= 0, not {text!r}")
    return seconds


@contextlib.contextmanager
def job_scratch(directory: Path | str | None) -> Iterator[None]:
    """Within this block, loops save and find their state under ``directory`` (None: they do not)."""
    token = _SCRATCH.set(None if directory is None else (Path(directory), [0]))
    try:
        yield
    finally:
        _SCRATCH.reset(token)


class LoopState:
    """The saved state of one loop of the running job. Loops are named by their order in the job (the first
    loop that asks is 0, the next 1, ...), which a rerun of the same job repeats."""

    def __init__(self, description: str, file: Path | None | object = _NEXT_IN_JOB):
        self.description, self.file = description, None if file is _NEXT_IN_JOB else file
        scratch = _SCRATCH.get()
        if file is _NEXT_IN_JOB and scratch is not None:
            directory, counter = scratch
            self.file = directory / f"loop{counter[0]}.pt"
            counter[0] += 1
        self.interval = save_interval()
        self._last = time.monotonic()

    def part(self, name: str, description: str) -> "LoopState":
        """The state of a loop inside this one (a long descent within one of its steps), in a file of its own
        beside this loop's; ``description`` must name what the inner loop starts from."""
        file = None if self.file is None else self.file.with_name(f"{self.file.stem}.{name}.pt")
        return LoopState(f"{self.description}: {description}", file)

    def narrowed(self, detail: str) -> "LoopState":
        """This loop's state, valid only for the run that ``detail`` names (its start, its rule): a rerun from
        anything else starts afresh."""
        return LoopState(f"{self.description}, {detail}", self.file)

    def restore(self) -> dict[str, Any] | None:
        """The state saved by an interrupted run of this loop, or None (nothing saved, or another loop's)."""
        if self.file is None:
            return None
        saved = load_or_discard(self.file, "loop state")
        if saved is None or saved.get("description") != self.description:
            return None
        print(f"losstopo: {self.description}: resumed from the state an interrupted run saved", file=sys.stderr,
              flush=True)
        return saved["state"]

    def save_due(self) -> bool:
        return self.file is not None and time.monotonic() - self._last >= self.interval

    def save(self, state: dict[str, Any]) -> None:
        if self.file is None:
            return
        save_torch({"description": self.description, "state": state}, self.file)
        self._last = time.monotonic()
