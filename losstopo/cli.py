"""The ``losstopo`` command that the DVC stages call.

    losstopo stage EXPERIMENT {minima,paths,curves,topology} [--params params.yaml] [--profile NAME]
    losstopo report [--params params.yaml] [--profile NAME] [--experiments NAME ...]
    losstopo config [--profile NAME]        # print the resolved settings
    losstopo validate [--profile NAME]      # check settings and data (the first DVC stage)
    losstopo repro [--profile NAME]         # set params.yaml's profile, then `dvc repro`

``stage`` and ``repro`` take ``--executor {local,ray}`` and ``--ray-address ADDRESS``: they override
params.yaml's ``executor`` and ``ray.address`` (through LOSSTOPO_EXECUTOR / LOSSTOPO_RAY_ADDRESS, which
``dvc repro`` passes on to every stage). The executor never changes results, so DVC does not track it.

Errors a user can fix (bad params, missing data, divergence) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from losstopo.config import EXECUTORS, ExperimentNotInProfile, as_dict, load_params, set_profile
from losstopo.errors import LosstopoError

STAGES = ("minima", "paths", "curves", "topology")


def mark_not_run(experiment: str, stage: str, profile: str, root: Path = Path("artifacts")) -> None:
    """A stage of an experiment that the profile leaves out: its DVC outputs say so, and hold nothing else
    that the report could read as a result."""
    from losstopo.io import save_json

    reason = {"experiment": experiment, "stage": stage, "profile": profile,
              "not_run": f"experiment {experiment!r} is not in profile {profile!r}'s experiments list"}
    save_json(reason, root / experiment / stage / "NOT_RUN.json")
    save_json({}, root / experiment / f"{stage}_metrics.json")
    print(f"losstopo: {experiment} {stage}: not run at profile {profile!r} (marked NOT_RUN)", file=sys.stderr)


def run_stage(experiment: str, stage: str, params_path: str, profile: str | None) -> None:
    from losstopo import registry

    params = load_params(params_path, profile, only=experiment)  # reads (imports) no other experiment's code
    found = registry.experiment(experiment)
    try:
        config = params.experiment(experiment)
    except ExperimentNotInProfile:
        mark_not_run(experiment, stage, params.profile)
        return
    (Path("artifacts") / experiment / stage / "NOT_RUN.json").unlink(missing_ok=True)
    if stage not in found.stages:
        raise LosstopoError(f"{experiment} has its own paths stage and no {stage} stage; the curves stage serves "
                            f"the barcode experiments whose paths.method may be polychain or best"
                            if stage == "curves" else f"{experiment} has no {stage} stage")
    found.stages[stage](config, params)


def shadowed_changes(raw: dict, committed: dict) -> list[str]:
    """One line per top-level setting that differs from ``committed`` (e.g. set by ``dvc exp run -S``) although the
    active profile overrides it, so that the change has no effect; each names the profile key to set instead."""
    from losstopo.tracking import flatten

    active = raw.get("profile", "paper")
    profile = flatten("", (raw.get("profiles") or {}).get(active) or {})
    now = flatten("", {k: v for k, v in raw.items() if k not in ("profiles", "profile")})
    before = flatten("", {k: v for k, v in committed.items() if k not in ("profiles", "profile")})
    lines = []
    for key, value in sorted(now.items()):
        parts = key.split(".")
        shadow = next((p for p in (".".join(parts[:n]) for n in range(1, len(parts) + 1)) if p in profile), None)
        if shadow is not None and (key not in before or before[key] != value):
            lines.append(f"params: {key} was changed to {value!r}, but profile {active!r} sets "
                         f"profiles.{active}.{shadow} = {profile[shadow]!r}, so the change has no effect: set "
                         f"profiles.{active}.{shadow} instead (e.g. dvc exp run -S profiles.{active}.{shadow}=...)")
    return lines


def committed_params(path: Path) -> dict | None:
    """params.yaml as last committed to git (None outside a repository or before its first commit)."""
    try:
        shown = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.resolve().parent, capture_output=True,
                               text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return (yaml.safe_load(shown.stdout) or {}) if shown.returncode == 0 else None
    except yaml.YAMLError:
        return None


def run_validate(params_path: str, profile: str | None, out: Path = Path("artifacts") / "validated.json") -> None:
    """Every setting of the active profile and the data of every experiment it runs, checked before DVC runs a
    compute stage (each depends on ``out``, whose content never changes: a pass reruns nothing, a failure stops
    DVC before it removes any stage's outputs)."""
    from losstopo import registry
    from losstopo.io import save_json
    from losstopo.job_data import stage_data
    from losstopo.stage_frame import resolve_device

    params = load_params(params_path, profile)
    resolve_device(params.runtime.device)  # a device this machine does not have: one line, now
    committed = committed_params(Path(params_path))
    for line in shadowed_changes(yaml.safe_load(Path(params_path).read_text()) or {}, committed) if committed else []:
        print(f"losstopo: warning: {line}", file=sys.stderr)
    for name, config in params.experiments.items():
        stage_data(params, registry.experiment(name).datasets(config))
    save_json({"validated": True}, out)


def run_report(params_path: str, profile: str | None, out_dir: str | None = None,
               experiments: list[str] | None = None) -> Path:
    """The report of the active profile, in ``reports/<profile>/`` unless ``out_dir`` says otherwise."""
    from losstopo.reporting import build_report

    params = load_params(params_path, profile)
    return build_report(params, Path(out_dir or f"reports/{params.profile}"), experiments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="losstopo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="run one compute stage of one experiment")
    stage.add_argument("experiment")
    stage.add_argument("stage", choices=STAGES)
    report = sub.add_parser("report", help="generate reports/ from the artifacts")
    report.add_argument("--out", default=None, help="output folder (default: reports/<profile>)")
    report.add_argument("--experiments", nargs="+", default=None,
                        help="report only these (a partial run, e.g. a GPU session's); default: all")
    config = sub.add_parser("config", help="print the resolved parameters")
    validate = sub.add_parser("validate", help="check every setting and dataset of the profile (DVC's first stage)")
    repro = sub.add_parser("repro", help="set the profile in params.yaml, then run `dvc repro`")
    for p in (stage, report, config, validate, repro):
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--profile", default=None, help="override the profile named in params.yaml")
    for p in (stage, repro):
        p.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="where the stage's jobs run (overrides params.yaml's executor)")
        p.add_argument("--ray-address", default=None,
                       help="Ray cluster to join, e.g. auto or HOST:6379 (overrides params.yaml's ray.address)")
    args = parser.parse_args(argv)
    for option, variable in (("executor", "LOSSTOPO_EXECUTOR"), ("ray_address", "LOSSTOPO_RAY_ADDRESS")):
        if getattr(args, option, None):
            os.environ[variable] = getattr(args, option)
    try:
        if args.command == "stage":
            run_stage(args.experiment, args.stage, args.params, args.profile)
        elif args.command == "repro":
            if args.profile:
                set_profile(args.params, args.profile)
                print(f"losstopo: params.yaml now selects profile {args.profile!r}", file=sys.stderr)
            load_params(args.params)  # fail fast on invalid params before DVC starts
            return subprocess.call(["dvc", "repro"])
        elif args.command == "validate":
            run_validate(args.params, args.profile)
        elif args.command == "report":
            print(run_report(args.params, args.profile, args.out, args.experiments))
        else:
            params = load_params(args.params, args.profile)
            print(json.dumps({"profile": params.profile, "data": as_dict(params.data),
                              "runtime": as_dict(params.runtime), "executor": params.executor,
                              "ray": as_dict(params.ray),
                              **{k: as_dict(v) for k, v in params.experiments.items()}}, indent=2))
    except LosstopoError as error:
        print(f"losstopo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
