"""The experiment registry (losstopo.registry), and the library's independence of the experiments that use it:
``losstopo/`` names no module of ``benchmarks/``, neither in an import nor in a string, and imports without it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from losstopo import config, registry
from losstopo.cli import main
from losstopo.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "losstopo"
APPLICATION = "benchmarks"
# "benchmarks" alone or dotted into a module ("benchmarks.fc_depth", f"benchmarks.{name}"); not a word of prose or
# a file path (benchmarks/RESULTS.md)
MODULE_MENTION = re.compile(rf"^{APPLICATION}(\.|$)|\b{APPLICATION}\.[A-Za-z_]")


def library_modules() -> list[str]:
    return sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in LIBRARY.rglob("*.py"))


def mentions(path: Path, root: Path = ROOT) -> list[str]:
    """Each import of a benchmarks module and each string constant that names one, in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno}: {name!r}" for name in names if MODULE_MENTION.search(name)]
    return found


def test_the_library_names_no_benchmarks_module():
    found = [line for path in sorted(LIBRARY.rglob("*.py")) for line in mentions(path)]
    assert not found, "losstopo/ names a benchmarks module:\n" + "\n".join(found)


def test_the_scan_finds_imports_and_module_names_in_strings(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('"""Speed: benchmarks/RESULTS.md; the benchmarks."""\nimport benchmarks.stages\n'
                      'from benchmarks import report\nname = f"benchmarks.{1}"\nfile = "benchmarks/RESULTS.md"\n'
                      'import os.path as benchmarks_path\n')
    assert mentions(source, tmp_path) == ["x.py:2: 'benchmarks.stages'", "x.py:3: 'benchmarks'",
                                          "x.py:4: 'benchmarks.'"]


BLOCKER = """
import importlib, importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "benchmarks" or name.startswith("benchmarks."):
            raise ImportError(f"a losstopo module imported {name}")
        return None

sys.meta_path.insert(0, Block())
for module in MODULES:
    importlib.import_module(module)
print(len(MODULES))
"""


def test_every_library_module_imports_without_benchmarks():
    modules = library_modules()
    assert "losstopo.cli" in modules and "losstopo.registry" in modules and "losstopo.reporting" in modules
    done = subprocess.run([sys.executable, "-c", BLOCKER.replace("MODULES", repr(modules))], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(len(modules))]


@pytest.fixture(autouse=True)
def fresh_discovery():
    """Discovery is cached per pyproject.toml; these tests rewrite theirs."""
    registry._discover.cache_clear()
    yield
    registry._discover.cache_clear()


def test_the_registry_lists_the_six_experiments_in_pyproject_order(monkeypatch):
    monkeypatch.chdir(ROOT)
    found = registry.experiments()
    assert list(found) == ["fc_depth", "cnn_channels", "cnn_bn", "resnet_lr", "wrn_robustness", "permutation_barrier"]
    paper = config.load_params(ROOT / "params.yaml", "paper")
    for name, experiment in found.items():
        assert experiment.name == name and experiment.module == f"{APPLICATION}.{name}"
        assert type(paper.experiment(name)) is experiment.config  # its params.yaml section, read with its schema
        assert {"minima", "paths", "topology"} <= set(experiment.stages) <= {"minima", "paths", "curves", "topology"}
        assert registry.experiment(name) == experiment


def _project(tmp_path: Path, monkeypatch, pyproject: str, modules: dict[str, str] | None = None) -> Path:
    (tmp_path / "pyproject.toml").write_text(pyproject)
    for name, source in (modules or {}).items():
        (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "deeper").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "deeper")  # the nearest pyproject.toml upward
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_pyproject_without_the_table_is_one_line(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, '[project]\nname = "x"\n')
    with pytest.raises(ConfigError) as error:
        registry.experiments()
    assert "no [tool.losstopo] experiments" in one_line(error)


def test_an_unimportable_or_incomplete_module_is_one_line(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, '[tool.losstopo]\nexperiments = ["no_such_module_here"]\n')
    with pytest.raises(ConfigError) as error:
        registry.experiments()
    assert "'no_such_module_here', which cannot be imported" in one_line(error)

    _project(tmp_path, monkeypatch, '[tool.losstopo]\nexperiments = ["registry_empty_module"]\n',
             {"registry_empty_module": "x = 1\n"})
    with pytest.raises(ConfigError) as error:
        registry.experiments()
    assert "'registry_empty_module', which defines no EXPERIMENT" in one_line(error)


def test_an_experiment_of_another_project_runs_through_the_cli(tmp_path, monkeypatch, capsys):
    """The library finds a project's experiments from its pyproject.toml alone: an unknown name is one line."""
    source = ("from losstopo.registry import Experiment\n"
              "RAN = []\n"
              "EXPERIMENT = Experiment('toy', dict, lambda config: [], {'minima': lambda c, p: RAN.append(c)},"
              " lambda config, figures: None)\n")
    _project(tmp_path, monkeypatch, '[tool.losstopo]\nexperiments = ["registry_toy_sweep"]\n',
             {"registry_toy_sweep": source})
    assert list(registry.experiments()) == ["toy"]
    with pytest.raises(ConfigError) as error:
        registry.experiment("fc_depth")
    assert one_line(error) == "unknown experiment 'fc_depth'; known: toy"
    assert main(["stage", "fc_depth", "minima", "--params", str(ROOT / "params.yaml"), "--profile", "ci"]) == 2
    assert capsys.readouterr().err.strip().endswith("unknown experiment 'fc_depth'; known: toy")


def test_outside_any_project_the_checkout_s_pyproject_lists_the_experiments(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "CHECKOUT", ROOT / "pyproject.toml")
    monkeypatch.chdir("/")  # no pyproject.toml at or above
    assert registry.pyproject() == ROOT / "pyproject.toml"
    monkeypatch.setattr(registry, "CHECKOUT", tmp_path / "pyproject.toml")  # installed: none next to the package
    with pytest.raises(ConfigError) as error:
        registry.pyproject()
    assert "no pyproject.toml in / or above" in one_line(error)
