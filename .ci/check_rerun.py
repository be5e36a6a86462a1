"""After a ci reproduction: DVC must be clean, and a path-optimisation parameter must re-run
validate (cheap, every params change), paths, curves (curve_steps may follow paths.steps) -> topology -> report
but never minima. Then params.yaml is restored and reproduced again,
so the final artifacts are those of the real ci settings."""

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
    log = subprocess.run(["dvc", "repro"], check=True, capture_output=True, text=True).stdout
finally:
    with open("params.yaml", "w") as handle:
        handle.write(original)
ran = set(re.findall(r"Running stage '([^']+)'", log))
if ran != {"validate", "fc_depth_paths", "fc_depth_curves", "fc_depth_topology", "report"}:
    fail(f"dvc repro ran {sorted(ran)}; expected validate, paths, curves, topology and report only")
restored = subprocess.run(["dvc", "repro"], check=True, capture_output=True, text=True).stdout
if "fc_depth_minima" in set(re.findall(r"Running stage '([^']+)'", restored)):
    fail("restoring the ci settings retrained minima")
if json.loads(dvc("status", "--json") or "{}"):
    fail("pipeline not clean after restoring the ci settings")
print(f"check_rerun: OK: a path parameter re-ran {sorted(ran)}; minima were not retrained")
