"""The executor contract: results in job order, finished jobs cached and never redone, executor
chosen by params or the command line, and Ray tasks (a local Ray instance) equal to in-process runs."""

from __future__ import annotations

import sys

import pytest

from losstopo.config import RayConfig, resolve
from losstopo.errors import ConfigError, LosstopoError
from losstopo.executor import Job, JobCache, LocalExecutor, make_executor


def square_job(shared, spec):
    if spec == shared.get("fail_on"):
        raise LosstopoError(f"job {spec} failed on purpose")
    return {"value": spec * spec + shared["offset"]}


def jobs_for(values):
    return [Job(f"job-{v}", v) for v in values]


class CountingExecutor(LocalExecutor):
    def __init__(self):
        self.ran = []

    def _run(self, fn, shared, jobs, gpu):
        for job in jobs:
            self.ran.append(job[1])
            yield from super()._run(fn, shared, [job], gpu)


def test_local_executor_returns_results_in_job_order():
    results = LocalExecutor().map(square_job, jobs_for([3, 1, 2]), shared={"offset": 10}, progress=False)
    assert [r["value"] for r in results] == [19, 11, 14]


def test_a_log_gets_one_line_per_finished_job_counting_the_cached_ones(tmp_path, capsys):
    cache = JobCache(tmp_path / "jobs")
    LocalExecutor().map(square_job, jobs_for([1]), shared={"offset": 0}, cache=cache, progress=False)
    capsys.readouterr()
    LocalExecutor().map(square_job, jobs_for([1, 2, 3]), shared={"offset": 0}, cache=cache, description="squares",
                        progress=True)  # stderr is captured, not a terminal: lines, not a bar
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["squares [local]: 2/3 jobs done", "squares [local]: 3/3 jobs done"]


def test_a_rerun_after_a_failure_does_only_the_unfinished_jobs(tmp_path):
    cache = JobCache(tmp_path / "jobs")
    first = CountingExecutor()
    with pytest.raises(LosstopoError, match="job 3 failed"):
        first.map(square_job, jobs_for([1, 2, 3, 4]), shared={"offset": 0, "fail_on": 3}, cache=cache, progress=False)
    assert first.ran == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["job-1.pt", "job-2.pt"]  # nothing half-written

    second = CountingExecutor()
    results = second.map(square_job, jobs_for([1, 2, 3, 4]), shared={"offset": 0}, cache=cache, progress=False)
    assert second.ran == [3, 4]
    assert [r["value"] for r in results] == [1, 4, 9, 16]
    cache.clear()
    assert not (tmp_path / "jobs").exists()


def resumable_job(shared, spec):
    """Counts to ``spec``, saving its count as a loop state; fails once at ``shared["fail_at"]``."""
    from losstopo.resume import LoopState

    state = LoopState(f"count to {spec}")
    count = (state.restore() or {"count": 0})["count"]
    while count < spec:
        count += 1
        shared["counted"].append(count)
        state.save({"count": count})
        if count == shared.get("fail_at"):
            del shared["fail_at"]
            raise LosstopoError("interrupted")
    return {"value": count}


def test_a_job_rerun_after_an_interruption_resumes_inside_from_its_scratch_which_goes_with_its_result(tmp_path,
                                                                                                     monkeypatch):
    monkeypatch.setenv("LOSSTOPO_SAVE_EVERY_S", "0")
    cache, shared = JobCache(tmp_path / "jobs"), {"counted": [], "fail_at": 3}
    with pytest.raises(LosstopoError, match="interrupted"):
        LocalExecutor().map(resumable_job, jobs_for([5]), shared=shared, cache=cache, progress=False)
    assert (cache.scratch("job-5") / "loop0.pt").is_file() and cache.scratch("job-5").parent == tmp_path / "jobs"
    results = LocalExecutor().map(resumable_job, jobs_for([5]), shared=shared, cache=cache, progress=False)
    assert results == [{"value": 5}] and shared["counted"] == [1, 2, 3, 4, 5]  # 4 and 5 only, the second time
    assert not cache.scratch("job-5").exists() and [p.name for p in cache.directory.iterdir()] == ["job-5.pt"]
    shared["counted"].clear()
    LocalExecutor().map(resumable_job, jobs_for([2]), shared=shared, progress=False)  # no cache: nothing saved
    assert shared["counted"] == [1, 2] and [p.name for p in cache.directory.iterdir()] == ["job-5.pt"]


def test_executor_comes_from_params_and_the_environment_wins(monkeypatch):
    params = resolve({"executor": "local", "ray": {"address": "auto", "cpus_per_job": 0.5}})
    assert params.executor == "local" and params.ray == RayConfig(address="auto", cpus_per_job=0.5)
    monkeypatch.delenv("LOSSTOPO_EXECUTOR", raising=False)
    assert isinstance(make_executor(params.executor, params.ray), LocalExecutor)
    monkeypatch.setenv("LOSSTOPO_EXECUTOR", "dask")
    with pytest.raises(LosstopoError, match="unknown executor 'dask'; allowed: local, ray"):
        make_executor(params.executor, params.ray)


@pytest.mark.parametrize("raw, message", [
    ({"executor": "threads"}, "executor must be one of local, ray"),
    ({"ray": {"max_retries": -1}}, "ray.max_retries must be >= 0"),
    ({"ray": {"adress": "auto"}}, "unknown key ray.adress"),
])
def test_bad_executor_settings_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_command_line_executor_reaches_the_stage_through_the_environment(monkeypatch):
    from losstopo import cli

    seen = {}
    monkeypatch.setattr(cli, "run_stage", lambda *args: seen.update(
        executor=__import__("os").environ.get("LOSSTOPO_EXECUTOR"),
        address=__import__("os").environ.get("LOSSTOPO_RAY_ADDRESS")))
    monkeypatch.setenv("LOSSTOPO_EXECUTOR", "local")  # restored after the test, whatever the CLI sets
    monkeypatch.setenv("LOSSTOPO_RAY_ADDRESS", "")
    assert cli.main(["stage", "fc_depth", "paths", "--executor", "ray", "--ray-address", "10.0.0.1:6379"]) == 0
    assert seen == {"executor": "ray", "address": "10.0.0.1:6379"}


class FakeRay:
    """Stands in for the ray module: records ``init`` instead of starting Ray."""

    def __init__(self):
        self.inits = []

    def is_initialized(self):
        return False

    def init(self, address=None, **options):
        self.inits.append(address)

    def remote(self, fn):
        return fn


@pytest.mark.parametrize("mode", ["disabled", " Disabled "])
def test_a_stage_does_not_start_its_own_ray_without_authentication(monkeypatch, mode):
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("LOSSTOPO_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    with pytest.raises(LosstopoError, match="RAY_AUTH_MODE=disabled"):
        make_executor("ray", RayConfig())
    assert fake.inits == []  # refused before anything listens
    make_executor("ray", RayConfig(address="10.0.0.1:6379"))  # a cluster someone started: its own choice
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    make_executor("ray", RayConfig())
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    make_executor("ray", RayConfig())
    assert fake.inits == ["10.0.0.1:6379", None, None]


@pytest.mark.parametrize("nodes, cpus_per_job, n_jobs, expected", [
    ([2.0], 1.0, 1, 2.0),  # one job on a 2-core machine: both cores
    ([2.0], 1.0, 2, 1.0),
    ([2.0], 1.0, 5, 1.0),  # more jobs than cores: they queue at cpus_per_job
    ([16.0], 1.0, 3, 5.0),
    ([1.0, 1.0], 1.0, 1, 1.0),  # never more than one node has
    ([8.0, 8.0], 1.0, 2, 8.0),
    ([2.0], 4.0, 1, 4.0),  # the setting is a floor
    ([], 1.0, 1, 1.0),
])
def test_a_stage_with_fewer_jobs_than_cpus_gives_each_more(monkeypatch, nodes, cpus_per_job, n_jobs, expected):
    fake = FakeRay()
    fake.nodes = lambda: [{"Alive": True, "Resources": {"CPU": cpus}} for cpus in nodes] + [
        {"Alive": False, "Resources": {"CPU": 64.0}}]  # a dead node counts for nothing
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert make_executor("ray", RayConfig(cpus_per_job=cpus_per_job))._cpus(n_jobs) == expected


def threads_job(shared, spec):
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_returns_the_local_results_in_job_order(local_ray, tmp_path):
    jobs = jobs_for([5, 1, 4, 2, 3])
    executor = make_executor("ray", RayConfig())
    assert executor.name == "ray"
    cache = JobCache(tmp_path / "jobs")
    got = executor.map(square_job, jobs, shared={"offset": 1}, cache=cache, progress=False, gpu=False)
    assert got == LocalExecutor().map(square_job, jobs, shared={"offset": 1}, progress=False)
    assert len(list((tmp_path / "jobs").iterdir())) == 5


@pytest.mark.slow
@pytest.mark.ray
def test_a_lone_ray_job_runs_on_every_core_and_two_share_them(local_ray):
    executor = make_executor("ray", RayConfig())
    assert executor.map(threads_job, jobs_for([1]), progress=False) == [2]
    assert executor.map(threads_job, jobs_for([1, 2]), progress=False) == [1, 1]


@pytest.mark.slow
@pytest.mark.ray
def test_a_failing_ray_job_fails_the_stage_with_its_message(local_ray):
    with pytest.raises(LosstopoError, match="job 4 failed on purpose"):
        make_executor("ray", RayConfig()).map(square_job, jobs_for([1, 4]), shared={"offset": 0, "fail_on": 4},
                                              progress=False)



def test_a_job_address_follows_the_code_its_function_runs_and_nothing_else(tmp_path, monkeypatch):
    """The address hashes the module closure of the job function (losstopo.codeversion): a change of a module it
    imports gives new addresses; a change of a module it does not import (e.g. another experiment's) does not."""
    from losstopo import codeversion
    from losstopo.executor import code_version, job_address

    package = tmp_path / "losstopo"
    package.mkdir()
    for name, source in {"__init__.py": "", "jobs.py": "from losstopo.kernel import K\nfrom losstopo.config import LIMIT\n\ndef job(shared, spec):\n"
                         "    return K * spec\n", "kernel.py": "K = 2\n", "other.py": "from losstopo import jobs\n",
                         "config.py": "LIMIT = 1\n"}.items():
        (package / name).write_text(source)
    monkeypatch.setattr(codeversion, "ROOT", tmp_path)

    def job():
        return None

    job.__module__ = "losstopo.jobs"

    def address():
        codeversion.module_closure.cache_clear()
        codeversion.module_version.cache_clear()
        return job_address(job, "minima", 3)

    first = address()
    assert code_version(job) == codeversion.module_version("losstopo.jobs")
    assert job_address(job, "minima", 4) != first
    (package / "other.py").write_text("from losstopo import jobs\nX = 1\n")  # imports the job; the job not it
    (package / "config.py").write_text("LIMIT = 2\n")  # the settings' schema: in the address as values
    assert address() == first
    (package / "kernel.py").write_text("K = 3\n")  # code the job runs
    assert address() != first
    monkeypatch.undo()
    codeversion.module_closure.cache_clear()
    codeversion.module_version.cache_clear()

