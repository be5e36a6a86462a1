"""The experiments of a project, by name: each a module that defines ``EXPERIMENT = Experiment(...)``.

The modules are listed, in order, in the project's ``pyproject.toml`` (the nearest one upward from the
working directory; else the one next to this package, in a checkout run without installing it)::

    [tool.losstopo]
    experiments = ["mypackage.sweep", ...]

The command line, the report, ``dvc.yaml``'s code deps and the speed benchmarks iterate over
:func:`experiments`; the library itself names no experiment module. (A list in pyproject.toml rather than
entry points: a machine may run the repository without installing it.)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from losstopo.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

StageFn = Callable[[Any, Any], None]  # (the experiment's settings, Params) -> None: writes the stage's outputs


@dataclass(frozen=True)
class Experiment:
    """An experiment: its settings' dataclass (the params.yaml section of its name), the datasets its stages
    read (checked by ``losstopo validate``), its compute stages by name and its section of the report."""

    name: str
    config: type
    datasets: Callable[[Any], list[str]]
    stages: Mapping[str, StageFn]
    report_section: Callable[[Any, Path], Any]  # (settings, figures folder) -> losstopo.report.Section
    module: str = field(default="", compare=False)  # filled in by discovery: the module that defines it


# where there is no pyproject.toml at or above the working directory (a stage run in a scratch folder): the one
# next to this package, when it is run from a checkout of its project rather than installed
CHECKOUT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pyproject(start: Path | None = None) -> Path:
    """The nearest pyproject.toml at or above ``start`` (default: the working directory), else :data:`CHECKOUT`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    if CHECKOUT.is_file():
        return CHECKOUT
    raise ConfigError(f"no pyproject.toml in {here} or above: it lists the experiments ([tool.losstopo] experiments)")


def experiment_modules(path: Path) -> list[str]:
    """The experiment modules that ``path`` (a pyproject.toml) lists, in its order."""
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("losstopo", {})
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    modules = table.get("experiments")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
        raise ConfigError(f"{path}: no [tool.losstopo] experiments = [\"package.module\", ...] (the experiment modules)")
    return modules


def load(module: str) -> Experiment:
    """The ``EXPERIMENT`` of ``module``."""
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"pyproject.toml: [tool.losstopo] experiments names {module!r}, which cannot be imported: "
                          f"{error}") from None
    experiment = getattr(found, "EXPERIMENT", None)
    if not isinstance(experiment, Experiment):
        raise ConfigError(f"pyproject.toml: [tool.losstopo] experiments names {module!r}, which defines no "
                          f"EXPERIMENT = losstopo.registry.Experiment(...)")
    return dataclasses.replace(experiment, module=module)


@functools.cache
def _discover(path: Path) -> dict[str, Experiment]:
    found: dict[str, Experiment] = {}
    for module in experiment_modules(path):
        experiment = load(module)
        if experiment.name in found:
            raise ConfigError(f"{path}: two experiment modules define experiment {experiment.name!r}: "
                              f"{found[experiment.name].module} and {module}")
        found[experiment.name] = experiment
    return found


def experiments() -> dict[str, Experiment]:
    """Every experiment of the project, by name, in pyproject.toml's order (discovered once per process)."""
    return dict(_discover(pyproject()))


def modules_for(name: str, path: Path | None = None) -> list[str]:
    """The experiment modules that :func:`experiment` imports to find ``name``: the listed module whose last part is
    ``name`` when there is one (a stage imports its own experiment's code only), else every listed module."""
    listed = experiment_modules(path or pyproject())
    return [module for module in listed if module.rpartition(".")[2] == name][:1] or listed


def experiment(name: str) -> Experiment:
    """The experiment called ``name``; one line naming the known ones when there is none."""
    modules = modules_for(name)
    if len(modules) == 1 and (found := load(modules[0])).name == name:
        return found
    known = experiments()
    if name not in known:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
