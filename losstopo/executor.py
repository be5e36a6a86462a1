"""Where the independent units of a stage run: in this process (``local``) or as Ray tasks (``ray``).

A stage cuts its work into jobs (a group of minima, a chunk of path pairs, a chunk of triangles),
each a picklable description, and calls ``executor.map(fn, jobs, shared=..., cache=...)`` with a
module-level function ``fn(shared, job) -> result``. ``shared`` (e.g. the minima's weights) is
sent once per stage, not once per job. Results come back in job order, whichever executor ran
them, and the stage writes every artefact and MLflow record itself from them: the files and runs
are the same for both executors.

Each finished result is written atomically to a :class:`JobCache` as soon as it arrives, keyed by
the job's content address, so a stage that fails or is killed and then rerun does only the jobs
that had not finished; the stage clears its cache once its outputs are written. With Ray, a job
whose worker dies is retried (``ray.max_retries``); a job that raises fails the stage.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from losstopo.codeversion import module_version
from losstopo.config import EXECUTORS, RayConfig, content_hash
from losstopo.errors import LosstopoError
from losstopo.io import from_safe, load_or_discard, save_torch, to_safe
from losstopo.resume import job_scratch

JobFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Job:
    """One independent unit: ``spec`` is passed to the job function; ``address`` names its result."""

    address: str
    spec: Any


def job_address(fn: JobFn, *parts: Any) -> str:
    """Content address of a job: its settings plus the version of the code that computes it (``fn``, the job
    function: :func:`code_version` of its module)."""
    return content_hash(code_version(fn), *parts)


def code_version(fn: JobFn) -> str:
    """Hash of the source of ``fn``'s module and of every project module it imports (losstopo.codeversion), so
    that a cached job result never outlives a change of the code that computes it, and a change elsewhere does
    not discard it."""
    module = fn.__module__
    if module == "__main__":  # a job function of a module run with python -m: its importable name
        module = getattr(sys.modules["__main__"].__spec__, "name", module)
    return module_version(module)


class JobCache:
    """Finished job results of one stage, one file per job address."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _file(self, address: str) -> Path:
        return self.directory / f"{address}.pt"

    def get(self, address: str) -> tuple[bool, Any]:
        """(True, result) for a finished job; an unreadable entry is discarded (the job runs again)."""
        found = load_or_discard(self._file(address), "job-cache entry")  # weights_only: no pickles run
        return (False, None) if found is None else (True, from_safe(found))

    def put(self, address: str, result: Any) -> None:
        save_torch(to_safe(result), self._file(address))
        shutil.rmtree(self.scratch(address), ignore_errors=True)

    def scratch(self, address: str) -> Path:
        """Where the unfinished job of ``address`` saves the state of its long loops (losstopo.resume), so that a
        rerun of the job resumes inside it; removed when its result is put."""
        return (self.directory / f"{address}.partial").absolute()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Executor:
    """Runs jobs and returns their results in job order; subclasses say how the pending ones run."""

    name = "executor"

    def map(self, fn: JobFn, jobs: Sequence[Job], *, shared: Any = None, cache: JobCache | None = None,
            description: str = "jobs", progress: bool = True, gpu: bool = True) -> list:
        """``gpu``: whether the jobs can use a GPU (Ray requests one for them when the cluster has any)."""
        results: list = [None] * len(jobs)
        pending = []
        for index, job in enumerate(jobs):
            found, value = cache.get(job.address) if cache is not None else (False, None)
            if found:
                results[index] = value
            else:
                pending.append(index)
        label = f"{description} [{self.name}]"
        bars = progress and len(jobs) > 1 and sys.stderr.isatty()
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=label, disable=not bars, leave=False)
        start, done = time.monotonic(), len(jobs) - len(pending)
        with bar:
            runs = [(i, jobs[i].spec, None if cache is None else str(cache.scratch(jobs[i].address))) for i in pending]
            for index, value in self._run(fn, shared, runs, gpu):
                if cache is not None:
                    cache.put(jobs[index].address, value)
                results[index] = value
                done += 1
                bar.update()
                if not bars:  # a log, not a terminal (or bars off): one line per finished job
                    print(f"{label}: {done}/{len(jobs)} jobs done ({time.monotonic() - start:.0f} s)",
                          file=sys.stderr, flush=True)
        return results

    def _run(self, fn: JobFn, shared: Any, jobs: list[tuple[int, Any, str | None]],
             gpu: bool) -> Iterator[tuple[int, Any]]:
        """Runs ``(index, spec, scratch)`` jobs, yielding ``(index, result)`` as they finish."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """In this process, one job after another (each job stacks its own models)."""

    name = "local"

    def _run(self, fn, shared, jobs, gpu):
        for index, spec, scratch in jobs:
            yield index, _call(fn, shared, spec, scratch)


def _call(fn: JobFn, shared: Any, spec: Any, scratch: str | None, threads: int | None = None) -> Any:
    """One job, its long loops saving in ``scratch``; on ``threads`` threads (a Ray task: the CPUs it holds)."""
    if threads is not None:
        torch.set_num_threads(threads)
    with job_scratch(scratch):
        return fn(shared, spec)


class RayExecutor(Executor):
    """Jobs as Ray tasks, each requesting ``cpus_per_job`` CPUs and, for GPU jobs on a cluster with
    GPUs, ``gpus_per_job`` GPUs (fractions let small jobs share one). ``address`` None starts Ray on
    this machine (or joins ``RAY_ADDRESS`` when set)."""

    name = "ray"

    def __init__(self, config: RayConfig):
        try:
            import ray
        except ImportError as error:
            raise LosstopoError("executor 'ray' needs Ray: pip install -e \".[ray]\"") from error
        self.ray, self.config = ray, config
        if not ray.is_initialized():
            refuse_unauthenticated_local_ray(config.address)
            try:
                ray.init(address=config.address, include_dashboard=False, log_to_driver=config.log_to_driver,
                         configure_logging=False)
            except ConnectionError as error:
                raise LosstopoError(f"cannot reach the Ray cluster at {config.address!r}: {error}") from error
        self._remote = ray.remote(_call)

    def _gpus(self, gpu: bool) -> float:
        if not gpu:
            return 0.0
        if self.config.gpus_per_job is not None:
            return self.config.gpus_per_job
        return 1.0 if self.ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _cpus(self, n_jobs: int) -> float:
        """CPUs a job holds: ``cpus_per_job``, or more when the stage has fewer jobs than the cluster has room for
        (a node's CPUs at most): a stage of one long job (the LeNet minima) would otherwise run on one thread while
        the other cores idle."""
        nodes = [node["Resources"].get("CPU", 0.0) for node in self.ray.nodes() if node.get("Alive")]
        if not nodes:
            return self.config.cpus_per_job
        shares = sum(nodes) // n_jobs
        return max(self.config.cpus_per_job, min(max(nodes), shares))

    def _run(self, fn, shared, jobs, gpu):
        if not jobs:
            return
        ray = self.ray
        cpus = self._cpus(len(jobs))
        task = self._remote.options(num_cpus=cpus, num_gpus=self._gpus(gpu),
                                    max_retries=self.config.max_retries, retry_exceptions=False)
        shared_ref = ray.put(shared)  # sent to the object store once, not with every job
        threads = max(int(cpus), 1)
        running = {task.remote(fn, shared_ref, spec, scratch, threads): index for index, spec, scratch in jobs}
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    index = running.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:
                        cause = error.as_instanceof_cause()
                        if isinstance(cause, LosstopoError):
                            raise LosstopoError(str(cause)) from error
                        raise
                    except ray.exceptions.WorkerCrashedError as error:
                        raise LosstopoError(f"a Ray worker died {self.config.max_retries + 1} times running job "
                                            f"{index}; raise ray.max_retries or check the worker's memory") from error
                    yield index, value
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


def refuse_unauthenticated_local_ray(address: str | None) -> None:
    """A Ray that a stage starts itself (no address, no ``RAY_ADDRESS``) listens on every interface (Ray 2.60 has
    no option to bind it to 127.0.0.1) and runs any code sent to it: token authentication, Ray's default, is what
    keeps others out, so a stage does not start one with it switched off."""
    starts_its_own = not address and not os.environ.get("RAY_ADDRESS")
    if starts_its_own and os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        raise LosstopoError("executor 'ray' will not start Ray with RAY_AUTH_MODE=disabled: it would listen on every "
                            "interface and run any code sent to it; unset RAY_AUTH_MODE (token authentication), or "
                            "start a cluster on a trusted network and pass --ray-address")


def make_executor(kind: str, ray_config: RayConfig) -> Executor:
    """``kind`` from params (``executor``), overridden by ``LOSSTOPO_EXECUTOR``; the Ray address by
    ``LOSSTOPO_RAY_ADDRESS`` (the command line's ``--executor``/``--ray-address`` set both)."""
    kind = os.environ.get("LOSSTOPO_EXECUTOR") or kind
    if kind not in EXECUTORS:
        raise LosstopoError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    if kind == "local":
        return LocalExecutor()
    address = os.environ.get("LOSSTOPO_RAY_ADDRESS")
    if address:
        ray_config = dataclasses.replace(ray_config, address=address)
    return RayExecutor(ray_config)
