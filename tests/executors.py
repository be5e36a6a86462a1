"""A test executor that behaves like a remote one: jobs run out of order, and the job function,
the shared data, each job and each result cross a pickle boundary (as they do to a Ray worker)."""

from __future__ import annotations

import pickle

from losstopo.executor import Executor


class PicklingExecutor(Executor):
    name = "pickling"

    def __init__(self):
        self.calls = 0  # jobs actually run (not served from a cache)

    def _run(self, fn, shared, jobs, gpu):
        fn, shared = pickle.loads(pickle.dumps(fn)), pickle.loads(pickle.dumps(shared))
        for index, spec in reversed(jobs):
            self.calls += 1
            yield index, pickle.loads(pickle.dumps(fn(shared, pickle.loads(pickle.dumps(spec)))))


def use_pickling_executor(monkeypatch) -> PicklingExecutor:
    """Every stage in this test runs its jobs through one PicklingExecutor (returned, to count calls)."""
    import benchmarks.stages

    executor = PicklingExecutor()
    monkeypatch.setattr(benchmarks.stages, "make_executor", lambda kind, ray_config: executor)
    return executor
