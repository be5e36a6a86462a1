"""dvc.yaml's code deps cover every project file each stage's command runs (benchmarks/dvc_deps.py computes them)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.dvc_deps import DVC_YAML, ENTRY_LINE, is_project_code, main, rewrite, run_modules, stage_code
from losstopo.codeversion import ROOT, _source

TEXT = DVC_YAML.read_text()


def uncovered(pipeline: dict) -> dict[str, list[str]]:
    """Per stage, the project files its command runs that its deps leave out (stages that miss none left out)."""
    missing = {}
    for name, stage in pipeline["stages"].items():
        deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in stage["deps"]}
        missing[name] = sorted(set(stage_code(stage["cmd"])) - deps)
    return {name: files for name, files in missing.items() if files}


def without_code_deps(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not ((entry := ENTRY_LINE.match(line)) and is_project_code(entry["path"])))


def test_every_stage_depends_on_every_project_file_its_command_runs():
    assert uncovered(yaml.safe_load(TEXT)) == {}, "run `python -m benchmarks.dvc_deps --write`"


def test_the_code_deps_are_exactly_the_generated_ones():
    assert rewrite(TEXT) == TEXT, "run `python -m benchmarks.dvc_deps --write`"
    assert main([]) == 0


def test_a_missing_module_is_caught_and_the_generator_puts_it_back():
    stage = TEXT.index("\n  fc_depth_paths:")
    line = "      - losstopo/config.py\n"  # dataclass defaults fill what params.yaml leaves out
    at = TEXT.index(line, stage)
    broken = TEXT[:at] + TEXT[at + len(line):]
    assert uncovered(yaml.safe_load(broken)) == {"fc_depth_paths": ["losstopo/config.py"]}
    assert rewrite(broken) == TEXT


def test_a_stage_whose_code_cannot_be_told_is_an_error():
    with pytest.raises(ValueError, match="cannot tell the code"):
        stage_code("python scripts/train.py")


def test_write_puts_back_every_code_dep_and_keeps_every_other_line(tmp_path, capsys):
    copy = tmp_path / "dvc.yaml"
    copy.write_text(without_code_deps(TEXT))
    assert main(["--dvc-yaml", str(copy)]) == 1
    assert "+      - losstopo/config.py" in capsys.readouterr().out
    assert copy.read_text() == without_code_deps(TEXT)  # the check alone writes nothing
    assert main(["--write", "--dvc-yaml", str(copy)]) == 0
    assert copy.read_text() == TEXT  # comments, params, outs, artifacts deps: byte for byte
    assert main(["--dvc-yaml", str(copy)]) == 0


def test_write_drops_a_stale_dep_and_keeps_a_commented_one():
    stage = TEXT.index("\n  fc_depth_paths:")
    line = "      - losstopo/cli.py\n"
    at = TEXT.index(line, stage)
    commented = "      - losstopo/cli.py  # the entry point\n"
    edited = TEXT[:at] + commented + "      - losstopo/gone.py\n" + TEXT[at + len(line):]
    assert rewrite(edited) == TEXT[:at] + commented + TEXT[at + len(line):]


IMPORT_AND_LIST = """
import importlib, json, sys
loaded = []
for modules in json.loads(sys.argv[1]):
    for name in [name for name in sys.modules if name.split(".")[0] in ("losstopo", "benchmarks")]:
        del sys.modules[name]  # each stage imports the project afresh (torch and the rest stay loaded)
    for module in modules:
        importlib.import_module(module)
    loaded.append(sorted({module.__file__ for name, module in list(sys.modules.items())
                          if name.split(".")[0] in ("losstopo", "benchmarks")}))
print(json.dumps(loaded))
"""


def test_the_modules_python_loads_for_a_stage_are_in_its_deps():
    """The import walker checked against Python itself: every project file that importing a stage's modules
    loads (parent packages, imports at module level) is in the stage's deps."""
    pipeline = yaml.safe_load(TEXT)["stages"]
    stages_of = {}  # the stages of one experiment import the same modules: each set is imported once
    for name, stage in pipeline.items():
        runs = run_modules(stage["cmd"]) | {"losstopo.cli"}
        roots = tuple(sorted(module for module in runs if _source(module) is not None))  # modules, not names
        stages_of.setdefault(roots, []).append(name)
    shown = subprocess.run([sys.executable, "-c", IMPORT_AND_LIST, json.dumps(list(stages_of))],
                           cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    for names, files in zip(stages_of.values(), json.loads(shown.stdout)):
        loaded = {str(Path(path).relative_to(ROOT)) for path in files}
        assert {name: sorted(loaded - set(pipeline[name]["deps"])) for name in names} == dict.fromkeys(names, [])
