"""One prepared call for a lent GPU, and bringing its files home. Not part of the packages: run it as a script.

On the GPU machine (torch, no MLflow, gudhi or DVC), from the repository root:

    python scripts/gpu_session.py run --out $OUT --budget-s 540 --data-root .devdata

runs, in order and each in its own process group, until the budget is spent:

1. the speed benchmarks (``python -m benchmarks.perf``, capped at ``--benchmarks-max-s``; every row is
   written as it is measured, so a capped run keeps its rows) -> ``results.json``;
2. the compute stages (every stage of ``dvc.yaml`` but topology, in its order: minima, paths, curves) of the
   experiments asked for, in the order asked, at ``--profile`` (default ``gpu-short``). A stage starts only
   if at least ``MIN_STAGE_S`` is left; one that outruns the budget is killed. An experiment whose stage
   failed or was killed runs no later stage; the next experiment is tried.

``session.json`` records every step (command, seconds, status, why) and says which stages did not run;
``session.log`` holds the whole output; ``artifacts.tgz`` the outputs of the stages that finished, less the
minima stages' weights and checkpoints (``*.pt``: large, and nothing run at home reads them). The stages
skip work already done with the same settings and an interrupted minima stage resumes from its epoch
checkpoint, so the same command again on the still-warm machine (``artifacts/`` stays there) continues.
Stages run with ``LOSSTOPO_TRACKING=off``.

Here, where gudhi and MLflow are installed:

    python scripts/gpu_session.py ingest DIR [--workdir device-runs/<profile>]

copies ``results.json`` to ``benchmarks/perf/results-<tag>.json``, unpacks the stage outputs into
``--workdir`` (git-ignored, away from the DVC outputs in ``artifacts/``), runs there the topology stages
and the report of the experiments whose compute stages all finished, and prints the claims table.
MLflow logs to ``<workdir>/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the packages are imported from this checkout

import yaml  # noqa: E402

from losstopo import registry  # noqa: E402
from losstopo.config import load_params  # noqa: E402
from losstopo.errors import LosstopoError  # noqa: E402
from losstopo.io import save_json  # noqa: E402

PACK_RESERVE_S = 20.0  # kept back at the end for artifacts.tgz and session.json
MIN_STAGE_S = 30.0  # a stage needs at least this (imports, data loading) to be worth starting


@dataclass
class Step:
    name: str
    argv: list[str]
    status: str = "pending"  # ok | failed | timed out | skipped
    seconds: float = 0.0
    returncode: int | None = None
    why: str = ""


@dataclass
class Session:
    budget_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = math.nan
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self):
        self.started = self.clock()

    def left(self) -> float:
        return self.budget_s - (self.clock() - self.started)


def run_step(session: Session, step: Step, log, env: dict[str, str], reserve_s: float = PACK_RESERVE_S,
             max_s: float = math.inf, min_s: float = 0.0) -> Step:
    """Runs ``step`` in its own process group, its output copied to stdout and ``log``; kills the group
    after ``max_s`` or when the session's budget (less ``reserve_s``) runs out. Skipped when less than
    ``min_s`` (and nothing) is left."""
    session.steps.append(step)
    left = session.left() - reserve_s
    limit = min(max_s, left)
    if left <= 0 or left < min_s:
        step.status, step.why = "skipped", f"budget spent ({max(left, 0):.0f} s left)"
        return step
    header = f"\n== {step.name}: {' '.join(step.argv)} (at most {limit:.0f} s)\n"
    for stream in (sys.stdout, log):
        stream.write(header)
        stream.flush()
    start = session.clock()
    process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    os.set_blocking(process.stdout.fileno(), False)
    while process.poll() is None and session.clock() - start < limit:
        _copy(process.stdout, log)
        time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        step.status, step.why = "timed out", f"killed after {limit:.0f} s"
    else:
        step.status = "ok" if process.returncode == 0 else "failed"
    _copy(process.stdout, log)
    step.returncode, step.seconds = process.returncode, session.clock() - start
    print(f"== {step.name}: {step.status} in {step.seconds:.1f} s", flush=True)
    return step


def _copy(stream, log) -> None:
    chunk = stream.read()
    if chunk:
        text = chunk.decode(errors="replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        log.write(text)
        log.flush()


def compute_stages(experiment: str, dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """The experiment's stages in ``dvc.yaml``, in its order, but topology (run at home)."""
    found = []
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        words = stage["cmd"].split()
        if words[3:5] == ["stage", experiment] and words[5] != "topology":
            found.append(words[5])
    return found


def stage_argv(python: str, experiment: str, stage: str, profile: str, params: Path) -> list[str]:
    return [python, "-m", "losstopo.cli", "stage", experiment, stage, "--profile", profile, "--params", str(params)]


def benchmarks_argv(python: str, out: Path, data_root: str | None, scale: str | None) -> list[str]:
    return [python, "-m", "benchmarks.perf", "--out", str(out / "results.json"),
            *(["--data-root", data_root] if data_root else []), *(["--scale", scale] if scale else [])]


def params_with_data_root(params: Path, data_root: str | None, directory: Path) -> Path:
    """A copy of params.yaml whose ``data.root`` is ``data_root`` (absolute), or the file itself."""
    if data_root is None:
        return params
    raw = yaml.safe_load(params.read_text())
    raw.setdefault("data", {})["root"] = str(Path(data_root).resolve())
    copy = directory / "params.yaml"
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    return copy


def pack_artifacts(artifacts: Path, finished: list[tuple[str, str]], out: Path) -> None:
    """Packs ``artifacts/<experiment>/<stage>`` of each finished stage into ``out``, less the minima stages'
    ``*.pt`` (weights, epoch checkpoints), and each experiment's ``<stage>_metrics.json``."""
    with tarfile.open(out, "w:gz") as tar:
        for experiment, stage in finished:
            for path in (artifacts / experiment / stage, artifacts / experiment / f"{stage}_metrics.json"):
                if path.exists():
                    tar.add(path, arcname=str(Path("artifacts") / path.relative_to(artifacts)),
                            filter=lambda info, stage=stage: (None if stage == "minima" and info.name.endswith(".pt")
                                                              else info))


def run(args, clock: Callable[[], float] = time.monotonic) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(args.budget_s, clock)
    env = dict(os.environ, PYTHONUNBUFFERED="1", LOSSTOPO_TRACKING="off", TQDM_MININTERVAL="10",  # short logs
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    python = sys.executable
    done, finished = [], []
    with tempfile.TemporaryDirectory() as tmp, open(out / "session.log", "w") as log:
        params = params_with_data_root(Path(args.params), args.data_root, Path(tmp))
        try:
            load_params(params, args.profile)  # a bad params file fails here, in one line, not in every step
        except LosstopoError as error:
            print(f"gpu_session: error: {error}", file=sys.stderr)
            return 2
        if not args.skip_benchmarks:
            run_step(session, Step("benchmarks", benchmarks_argv(python, out, args.data_root, args.scale)), log, env,
                     max_s=args.benchmarks_max_s)
        for experiment in args.experiments:
            stopped = ""
            for stage in compute_stages(experiment):
                name = f"{experiment} {stage}"
                if stopped:
                    session.steps.append(Step(name, [], status="skipped", why=f"{stopped} did not finish"))
                    continue
                step = run_step(session, Step(name, stage_argv(python, experiment, stage, args.profile, params)),
                                log, env, min_s=MIN_STAGE_S)
                if step.status == "ok":
                    finished.append((experiment, stage))
                else:
                    stopped = name
            if not stopped:
                done.append(experiment)
        if finished:
            pack_artifacts(Path("artifacts"), finished, out / "artifacts.tgz")
    not_run = [s.name for s in session.steps if s.status != "ok"]
    summary = {"profile": args.profile, "budget_s": args.budget_s, "seconds": args.budget_s - session.left(),
               "experiments_done": done, "not_run": not_run, "steps": [asdict(s) for s in session.steps]}
    save_json(summary, out / "session.json")
    print(f"{'step':32s} {'status':10s} {'seconds':>8s}  why")
    for step in session.steps:
        print(f"{step.name:32s} {step.status:10s} {step.seconds:8.1f}  {step.why}")
    if not_run:
        print(f"did not run or finish: {', '.join(not_run)}")
    return 0 if all(s.status in ("ok", "skipped") for s in session.steps) else 1


def load_session(directory: Path) -> dict:
    path = directory / "session.json"
    if not path.is_file():
        raise LosstopoError(f"{path} not found: DIR must be the --out folder of `gpu_session.py run`")
    return json.loads(path.read_text())


def claims_table(report_md: str) -> str:
    """The report's "## Claims" section, for RESULTS.md."""
    return report_md.split("## Claims", 1)[1].split("\n## ", 1)[0].strip()


def run_here(argv: list[str], workdir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if subprocess.call([sys.executable, "-m", "losstopo.cli", *argv], cwd=workdir, env=env) != 0:
        raise LosstopoError(f"`losstopo {' '.join(argv)}` failed in {workdir}")


def ingest(args) -> int:
    try:
        session = load_session(args.directory)
        if (args.directory / "results.json").is_file():
            target = args.perf_dir / f"results-{args.tag}.json"
            shutil.copyfile(args.directory / "results.json", target)
            print(f"copied {target}")
        experiments, profile = session["experiments_done"], session["profile"]
        if session.get("not_run"):
            print(f"did not run or finish on the device: {', '.join(session['not_run'])}")
        if not experiments:
            print("no experiment's compute stages all finished on the device: nothing to report")
            return 0
        workdir = args.workdir or REPO / "device-runs" / profile
        shutil.rmtree(workdir / "artifacts", ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.directory / "artifacts.tgz") as tar:
            tar.extractall(workdir, filter="data")
        params = str(args.params.resolve())
        for experiment in experiments:
            run_here(["stage", experiment, "topology", "--profile", profile, "--params", params], workdir)
        run_here(["report", "--profile", profile, "--params", params, "--experiments", *experiments], workdir)
    except (LosstopoError, OSError, tarfile.TarError) as error:
        print(f"gpu_session: error: {error}", file=sys.stderr)
        return 2
    report = workdir / "reports" / profile / "report.md"
    print(claims_table(report.read_text()))
    print(f"report: {report}; MLflow: {workdir / 'mlflow.db'}")
    return 0


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    on_device = sub.add_parser("run", help="on the GPU machine: benchmarks, then compute stages, in a time budget")
    on_device.add_argument("--out", required=True, help="folder for the files to bring back ($OUT on the device)")
    on_device.add_argument("--budget-s", type=float, default=540.0, help="wall time for the whole session")
    on_device.add_argument("--data-root", default=None, help="offline data root (default: params.yaml's data.root)")
    on_device.add_argument("--params", default="params.yaml")
    on_device.add_argument("--profile", default="gpu-short", help="profile of the compute stages")
    names = list(registry.experiments())
    on_device.add_argument("--experiments", nargs="*", default=names, choices=names,
                           help="compute stages to run, in this order (default: all)")
    on_device.add_argument("--benchmarks-max-s", type=float, default=200.0,
                           help="cap on the speed benchmarks (they keep every row finished before it)")
    on_device.add_argument("--skip-benchmarks", action="store_true", help="measured in an earlier session")
    on_device.add_argument("--scale", default=None, help="passed to benchmarks.perf (default: by device)")
    home = sub.add_parser("ingest", help="here: topology, report and claims table from a session's files")
    home.add_argument("directory", type=Path)
    home.add_argument("--workdir", type=Path, default=None, help="default: device-runs/<profile>")
    home.add_argument("--params", type=Path, default=REPO / "params.yaml")
    home.add_argument("--tag", default="cuda", help="suffix of the copied results (results-<tag>.json)")
    home.add_argument("--perf-dir", type=Path, default=REPO / "benchmarks" / "perf", help="where they are copied")
    args = parser.parse_args(argv)
    return run(args, clock) if args.command == "run" else ingest(args)


if __name__ == "__main__":
    sys.exit(main())
