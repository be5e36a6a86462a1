"""One prepared call for a lent GPU: everything issue 7 needs from it, inside a time budget.

    python -m benchmarks.perf.device_session --out $OUT --budget-s 540 --data-root .devdata

A lent machine gives a session one call of at most 10 minutes (device README), so this runs, in order:

1. the speed benchmarks (``python -m benchmarks.perf``, at most ``--benchmarks-max-s``; every row is
   written as it is measured) -> ``results.json``;
2. the projections of ``gpu-short`` (at the carried data's sizes) and ``paper`` at exact shapes, with
   the bf16 peak measured in the same run, each timing ops for at most ``--projection-max-s`` (stages
   left out are marked untimed) -> ``projection-<profile>.json``;
3. the ``gpu-short`` compute stages (minima, then paths) of the experiments asked for, in order. An
   experiment starts only if its projection (this session's, or ``--projection`` from an earlier one),
   times ``--margin`` plus a fixed overhead, fits in the time really left; otherwise it is skipped and
   ``session.json`` says why.

Each step runs in its own process group and is killed at its cap or when the budget runs out. The stage outputs
without checkpoints (``*.pt``) are packed into ``artifacts.tgz``; ``session.json`` records every step
(command, seconds, exit status, skipped and why) and ``session.log`` the whole output. Everything lands
in ``--out`` (at most 6 files, as the device tool brings back 8). Bring them home with
``python -m benchmarks.perf.device_ingest DIR``: topology, report and claims table run there, where
gudhi and MLflow are installed. Stages run with ``LOSSTOPO_TRACKING=off``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from losstopo.config import EXPERIMENTS, load_params
from losstopo.errors import LosstopoError
from losstopo.io import save_json

STAGES = ("minima", "paths")
STAGE_OVERHEAD_S = 20.0  # imports, data loading and writing per stage process, not in the projection
PACK_RESERVE_S = 20.0  # kept back at the end for artifacts.tgz and session.json


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
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


def seconds_needed(projected: dict[tuple[str, str], float], experiment: str, margin: float,
                   overhead_s: float = STAGE_OVERHEAD_S) -> float | None:
    """What an experiment's minima and paths stages need: ``margin`` x their projected seconds plus
    ``overhead_s`` each; None where a stage has no projection."""
    if any((experiment, s) not in projected for s in STAGES):
        return None
    return sum(margin * projected[(experiment, s)] + overhead_s for s in STAGES)


def projected_seconds(projection_json: Path) -> dict[tuple[str, str], float]:
    """Projected seconds per (experiment, stage), of the stages whose every op was timed."""
    rows = json.loads(projection_json.read_text())["stages"]
    return {(r["experiment"], r["stage"]): r["seconds"] for r in rows if r["bound"] != "untimed"}


def run_step(session: Session, step: Step, log, env: dict[str, str], reserve_s: float = PACK_RESERVE_S,
             max_s: float = math.inf) -> Step:
    """Runs ``step`` in its own process group, its output copied to stdout and ``log``; kills the group
    after ``max_s`` or when the session's budget (less ``reserve_s``) runs out."""
    session.steps.append(step)
    limit = min(max_s, session.left() - reserve_s)
    if limit <= 0:
        step.status, step.why = "skipped", "budget spent"
        return step
    header = f"\n== {step.name}: {' '.join(step.argv)} (at most {limit:.0f} s)\n"
    for stream in (sys.stdout, log):
        stream.write(header)
        stream.flush()
    start = time.monotonic()
    process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    os.set_blocking(process.stdout.fileno(), False)
    while process.poll() is None and time.monotonic() - start < limit:
        _copy(process.stdout, log)
        time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        step.status, step.why = "timed out", f"killed after {limit:.0f} s"
    else:
        step.status = "ok" if process.returncode == 0 else "failed"
    _copy(process.stdout, log)
    step.returncode, step.seconds = process.returncode, time.monotonic() - start
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


def params_with_data_root(params: Path, data_root: str | None, directory: Path) -> Path:
    """A copy of params.yaml whose ``data.root`` is ``data_root`` (absolute), or the file itself."""
    if data_root is None:
        return params
    raw = yaml.safe_load(params.read_text())
    raw.setdefault("data", {})["root"] = str(Path(data_root).resolve())
    copy = directory / "params.yaml"
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    return copy


def pack_artifacts(artifacts: Path, experiments: list[str], out: Path) -> list[str]:
    """Packs ``artifacts/<experiment>`` of each experiment, without checkpoints, into ``out``."""
    packed = [e for e in experiments if (artifacts / e).is_dir()]
    with tarfile.open(out, "w:gz") as tar:
        for experiment in packed:
            tar.add(artifacts / experiment, arcname=f"artifacts/{experiment}",
                    filter=lambda info: None if info.name.endswith(".pt") else info)
    return packed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the files to bring back ($OUT on the device)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall time for the whole session")
    parser.add_argument("--data-root", default=None, help="offline data root (default: params.yaml's data.root)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default="gpu-short", help="profile of the compute stages")
    parser.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS),
                        help="compute stages to try, in this order (default: all)")
    parser.add_argument("--margin", type=float, default=1.5, help="x the projected seconds an experiment must fit")
    parser.add_argument("--benchmarks-max-s", type=float, default=200.0,
                        help="cap on the speed benchmarks (they keep every row finished before it)")
    parser.add_argument("--projection-max-s", type=float, default=75.0,
                        help="per projection: time ops for this long (stages left out are marked untimed)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("benchmarks", "projections"),
                        help="steps already measured in an earlier session")
    parser.add_argument("--projection", type=Path, default=None,
                        help="plan the stages with this projection JSON (one measured on this device earlier); "
                             "default: the one this session measures")
    parser.add_argument("--scale", default=None, help="passed to benchmarks.perf (default: by device)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.experiments) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiment {unknown[0]!r}; known: {', '.join(EXPERIMENTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(args.budget_s)
    env = dict(os.environ, PYTHONUNBUFFERED="1", LOSSTOPO_TRACKING="off", TQDM_MININTERVAL="10")  # short logs
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp, open(out / "session.log", "w") as log:
        params = params_with_data_root(Path(args.params), args.data_root, Path(tmp))
        try:
            for profile in (args.profile, "paper"):
                load_params(params, profile)  # a bad params file fails here, in one line, not in every step
        except LosstopoError as error:
            print(f"device_session: error: {error}", file=sys.stderr)
            return 2
        if "benchmarks" not in args.skip:
            run_step(session, Step("benchmarks", [python, "-m", "benchmarks.perf", "--out", str(out / "results.json"),
                                                  *(["--data-root", args.data_root] if args.data_root else []),
                                                  *(["--scale", args.scale] if args.scale else [])]), log, env,
                     max_s=args.benchmarks_max_s)
        projection = args.projection or out / f"projection-{args.profile}.json"
        if "projections" not in args.skip:
            for profile in dict.fromkeys([args.profile, "paper"]):
                run_step(session, Step(f"projection {profile}", [
                    python, "-m", "benchmarks.perf.projection", "--profile", profile, "--params", str(params),
                    # the stages to plan run on the data carried here; paper scale means the full sets
                    "--sizes", "full" if profile == "paper" else "here",
                    "--max-seconds", str(args.projection_max_s), "--out", str(out / f"projection-{profile}.json")]),
                         log, env, max_s=args.projection_max_s + 60)  # + imports, the peak and the last op
        projected = projected_seconds(projection) if projection.is_file() else {}
        done = []
        for experiment in args.experiments:  # planned one at a time, with the time really left
            need, left = seconds_needed(projected, experiment, args.margin), session.left() - PACK_RESERVE_S
            why = (f"no projection of its stages in {projection.name}" if need is None
                   else f"needs ~{need:.0f} s ({args.margin}x projection + overhead), {left:.0f} s left"
                   if need > left else "")
            if why:
                session.steps.append(Step(f"{experiment} stages", [], status="skipped", why=why))
                continue
            for stage in STAGES:
                step = run_step(session, Step(f"{experiment} {stage}", [
                    python, "-m", "losstopo.cli", "stage", experiment, stage, "--profile", args.profile,
                    "--params", str(params)]), log, env)
                if step.status != "ok":
                    break
            else:
                done.append(experiment)
        packed = pack_artifacts(Path("artifacts"), done, out / "artifacts.tgz") if done else []
    summary = {"profile": args.profile, "budget_s": args.budget_s, "seconds": args.budget_s - session.left(),
               "experiments_done": packed, "steps": [asdict(s) for s in session.steps]}
    save_json(summary, out / "session.json")
    print(f"{'step':32s} {'status':10s} {'seconds':>8s}  why")
    for step in session.steps:
        print(f"{step.name:32s} {step.status:10s} {step.seconds:8.1f}  {step.why}")
    return 0 if all(s.status in ("ok", "skipped") for s in session.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
