"""A test executor that behaves like a remote one: jobs run out of order, and the job function,
the shared data, each job and each result cross a pickle boundary (as they do to a Ray worker)."""

from __future__ import annotations

import pickle

from losstopo.executor import Executor, _call


class PicklingExecutor(Executor):
    name = "pickling"

    def __init__(self):
        self.calls = 0  # jobs actually run (not served from a cache)

    def _run(self, fn, shared, jobs, gpu):
        fn, shared = pickle.loads(pickle.dumps(fn)), pickle.loads(pickle.dumps(shared))
        for index, spec, scratch in reversed(jobs):
            self.calls += 1
            yield index, pickle.loads(pickle.dumps(_call(fn, shared, pickle.loads(pickle.dumps(spec)), scratch)))


def use_pickling_executor(monkeypatch) -> PicklingExecutor:
    """Every stage in this test runs its jobs through one PicklingExecutor (returned, to count calls)."""
    import losstopo.stage_frame

    executor = PicklingExecutor()
    monkeypatch.setattr(losstopo.stage_frame, "make_executor", lambda kind, ray_config: executor)
    return executor


def run_minima_and_paths_both_ways(module, params, tmp_path, monkeypatch):
    """An experiment module's minima and paths stages run twice, in ``tmp_path/local`` with the local
    executor and in ``tmp_path/pickling`` with a PicklingExecutor; returns both experiment folders and
    the PicklingExecutor (its ``calls``: the jobs it ran)."""
    def run(root):
        config = params.experiment(module.NAME)
        module.run_minima(config, params, root)
        module.run_paths(config, params, root)
        return root / module.NAME

    local = run(tmp_path / "local")
    executor = use_pickling_executor(monkeypatch)
    return local, run(tmp_path / "pickling"), executor
