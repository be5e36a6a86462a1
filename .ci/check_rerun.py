"""After a ci reproduction: DVC must be clean, and a path-optimisation parameter must re-run
paths -> topology -> report but never minima. Uses `dvc repro --dry` and restores params.yaml,
so the artifacts stay those of the real ci settings."""

import json
import re
import subprocess
import sys

import yaml


def dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], check=True, capture_output=True, text=True).stdout


def fail(message: str) -> None:
    print(f"check_rerun: FAILED: {message}")
    sys.exit(1)


status = json.loads(dvc("status", "--json") or "{}")
if status:
    fail(f"pipeline not clean after the ci reproduction: {sorted(status)}")

with open("params.yaml") as handle:
    original = handle.read()
params = yaml.safe_load(original)
params["profiles"]["ci"]["fc_depth"]["paths"]["steps"] //= 2
with open("params.yaml", "w") as handle:
    yaml.safe_dump(params, handle, sort_keys=False)
changed = set(json.loads(dvc("status", "--json") or "{}"))
if "fc_depth_paths" not in changed or "fc_depth_minima" in changed:
    fail(f"after changing a path parameter, dvc status lists {sorted(changed)}")
try:
    log = subprocess.run(["dvc", "repro", "--dry"], check=True, capture_output=True, text=True).stdout
finally:
    with open("params.yaml", "w") as handle:
        handle.write(original)
ran = set(re.findall(r"Running stage '([^']+)'", log))
if json.loads(dvc("status", "--json") or "{}"):
    fail("params.yaml restored but the pipeline is no longer clean")
if ran != {"fc_depth_paths", "fc_depth_topology", "report"}:
    fail(f"dvc repro --dry would run {sorted(ran)}; expected paths, topology and report only")
print(f"check_rerun: OK: a path parameter re-runs {sorted(ran)}; minima are not retrained")
