"""After a ci reproduction: DVC must be clean, and a path-optimisation parameter must re-run
validate (cheap, every params change), paths, curves (curve_steps may follow paths.steps) -> topology -> report
but never minima. Then params.yaml, dvc.lock and the outputs are put back as the ci reproduction left them (a
copy taken before the change: the stages with uncached metrics cannot come from DVC's run cache, and running
them again took ~5 of this check's ~11 minutes), and DVC must be clean again."""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

KEPT = [Path("dvc.lock"), Path("params.yaml"), Path("artifacts"), Path("reports/ci")]


def dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], check=True, capture_output=True, text=True).stdout


def fail(message: str) -> None:
    print(f"check_rerun: FAILED: {message}")
    sys.exit(1)


def put_back(copy: Path) -> None:
    for path in KEPT:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        kept = copy / path
        (shutil.copytree if kept.is_dir() else shutil.copy2)(kept, path)


status = json.loads(dvc("status", "--json") or "{}")
if status:
    fail(f"pipeline not clean after the ci reproduction: {sorted(status)}")

with tempfile.TemporaryDirectory(prefix="check_rerun-") as scratch:
    copy = Path(scratch)
    for path in KEPT:
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy / path)
    params = yaml.safe_load(Path("params.yaml").read_text())
    paths = params["profiles"]["ci"]["fc_depth"]["paths"]
    paths["steps"] = max(1, paths["steps"] // 10)  # a real change, cheap to run
    if "curve_steps" in paths:  # the curves re-run anyway (they read the paths section): cheaply too
        paths["curve_steps"] = max(1, paths["curve_steps"] // 10)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(dvc("status", "--json") or "{}"))
        if "fc_depth_paths" not in changed or "fc_depth_minima" in changed:
            fail(f"after changing a path parameter, dvc status lists {sorted(changed)}")
        log = subprocess.run(["dvc", "repro"], check=True, capture_output=True, text=True).stdout
    finally:
        put_back(copy)

ran = set(re.findall(r"Running stage '([^']+)'", log))
if ran != {"validate", "fc_depth_paths", "fc_depth_curves", "fc_depth_topology", "report"}:
    fail(f"dvc repro ran {sorted(ran)}; expected validate, paths, curves, topology and report only")
if json.loads(dvc("status", "--json") or "{}"):
    fail("pipeline not clean after putting the ci reproduction's outputs back")
print(f"check_rerun: OK: a path parameter re-ran {sorted(ran)}; minima were not retrained")
