"""Bring a GPU session's files home: ``python -m benchmarks.perf.device_ingest DIR [--workdir device-runs/gpu-short]``.

DIR holds what ``benchmarks.perf.device_session`` wrote on the device. This copies the speed results
and projections into ``benchmarks/perf/`` (suffixed with ``--tag``, so the CPU figures stay), unpacks
the stage outputs into ``--workdir`` (git-ignored, away from the DVC outputs in ``artifacts/``), runs
there the topology stages and the report of the experiments that finished (gudhi and MLflow are
here, not on the device), and prints the claims table. MLflow logs to ``<workdir>/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from losstopo.errors import LosstopoError

PERF = Path(__file__).parent
REPO = PERF.parent.parent


def load_session(directory: Path) -> dict:
    path = directory / "session.json"
    if not path.is_file():
        raise LosstopoError(f"{path} not found: DIR must be the --out folder of benchmarks.perf.device_session")
    return json.loads(path.read_text())


def copy_measurements(directory: Path, tag: str, perf: Path = PERF) -> list[Path]:
    """results.json -> results-<tag>.json, projection-<p>.json -> projection-<p>-<tag>.json."""
    copied = []
    for source in sorted([directory / "results.json", *directory.glob("projection-*.json")]):
        if source.is_file():
            target = perf / f"{source.stem}-{tag}.json"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def claims_table(report_md: str) -> str:
    """The report's "## Claims" section, for RESULTS.md."""
    return report_md.split("## Claims", 1)[1].split("\n## ", 1)[0].strip()


def run_here(argv: list[str], workdir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if subprocess.call([sys.executable, "-m", "losstopo.cli", *argv], cwd=workdir, env=env) != 0:
        raise LosstopoError(f"`losstopo {' '.join(argv)}` failed in {workdir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--workdir", type=Path, default=None, help="default: device-runs/<profile>")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--tag", default="cuda", help="suffix of the copied results and projections")
    parser.add_argument("--perf-dir", type=Path, default=PERF, help="where they are copied")
    args = parser.parse_args(argv)
    try:
        session = load_session(args.directory)
        for path in copy_measurements(args.directory, args.tag, args.perf_dir):
            print(f"copied {path}")
        experiments, profile = session["experiments_done"], session["profile"]
        if not experiments:
            print("no experiment's compute stages finished on the device: nothing to report")
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
        print(f"device_ingest: error: {error}", file=sys.stderr)
        return 2
    report = workdir / "reports" / profile / "report.md"
    print(claims_table(report.read_text()))
    print(f"report: {report}; MLflow: {workdir / 'mlflow.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
