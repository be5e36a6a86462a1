"""dvc.yaml's code deps, computed from the import statements: every project module a stage's command runs.

    python -m benchmarks.dvc_deps            # print what would change in dvc.yaml; exit 1 if anything would
    python -m benchmarks.dvc_deps --write    # rewrite the code deps in place

A stage's code is ``losstopo/cli.py``, the project modules that the CLI imports to run the stage's command (its
module-level imports and those inside the cli functions that command reaches), the experiment modules that the
registry imports at run time (losstopo.registry, from pyproject.toml's ``[tool.losstopo]``: a stage imports its own
experiment's module, validate and report every listed one), the transitive closure of their imports
(function-level imports included, ``losstopo.config`` and ``losstopo.errors`` too) and the ``__init__.py`` of every
package on the way.
Only the ``deps:`` entries that name a project ``.py`` file are rewritten; every other line of dvc.yaml stays as
it is (done on the text: a YAML round trip would drop the comments).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import re
import shlex
import sys
from pathlib import Path

import yaml

from losstopo.codeversion import PROJECT_PACKAGES, ROOT, _imported_modules, _source, module_closure
from losstopo import registry

DVC_YAML = ROOT / "dvc.yaml"
CLI = "losstopo.cli"
CLI_PREFIX = ["python", "-m", CLI]
CLI_ENTRY = {"validate": "run_validate", "stage": "run_stage", "report": "run_report"}  # what main() calls
STAGE_LINE = re.compile(r"^  (?P<name>[\w-]+):")
DEPS_LINE = re.compile(r"^(?P<indent> +)deps:\s*(#.*)?$")
ENTRY_LINE = re.compile(r"^(?P<indent> +)- (?P<path>[^\s#:]+)\s*(#.*)?$")


def is_project_code(path: str) -> bool:
    return path.endswith(".py") and path.split("/")[0] in PROJECT_PACKAGES


def cli_arguments(cmd: str) -> list[str]:
    """The arguments that a stage's command passes to ``losstopo.cli``, the first one a command it knows."""
    args = shlex.split(cmd)
    if args[:3] != CLI_PREFIX or len(args) < 4 or args[3] not in CLI_ENTRY:
        raise ValueError(f"dvc.yaml: cannot tell the code of {cmd!r}: not `python -m losstopo.cli "
                         f"{{{','.join(CLI_ENTRY)}}} ...`")
    return args[3:]


def run_modules(cmd: str) -> set[str]:
    """What ``losstopo.cli`` imports to run a stage's command: by import statement (:func:`cli_imports`) and by
    name at run time (:func:`losstopo.registry.modules_for`; validate and report load every experiment's module)."""
    command, *rest = cli_arguments(cmd)
    pyproject = ROOT / "pyproject.toml"
    by_name = registry.modules_for(rest[0], pyproject) if command == "stage" else registry.experiment_modules(pyproject)
    return cli_imports(command) | set(by_name)


def cli_imports(command: str) -> set[str]:
    """The project modules ``losstopo.cli`` imports to run ``command``: its module-level imports, and those inside
    the functions of cli.py that the command's entry function reaches (the other commands' imports never run)."""
    tree = ast.parse(_source(CLI).read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    reached, todo = {"main"}, [CLI_ENTRY[command]]  # main() dispatches: its own body runs, not all it names
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [node.id for node in ast.walk(functions[name])
                     if isinstance(node, ast.Name) and node.id in functions]
    run = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    run += [functions[name] for name in reached]
    package = CLI.rpartition(".")[0]
    return set().union(*(_imported_modules(package, node) for node in run))


def packages_of(path: Path) -> set[str]:
    """The packages whose ``__init__.py`` Python runs before it runs the module in ``path``."""
    parts = path.relative_to(ROOT).parts[:-1]
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1)}


def stage_code(cmd: str) -> tuple[str, ...]:
    """The project source files that ``cmd`` runs, relative to the project, sorted."""
    return code_files(frozenset(run_modules(cmd)))


@functools.cache  # the stages of one experiment run the same modules
def code_files(modules: frozenset[str]) -> tuple[str, ...]:
    """The files of ``modules``, of all they import and of the packages that hold them, plus losstopo/cli.py."""
    while True:
        files = set(module_closure(*sorted(modules), settings=True)) | {_source(CLI)}
        packages = set().union(*map(packages_of, files))
        if packages <= modules:
            return tuple(sorted(str(path.relative_to(ROOT)) for path in files))
        modules |= packages


def deps_lists(lines: list[str]) -> list[tuple[str, int, int]]:
    """(stage, first, end) of each stage's ``deps:`` list in ``lines``: the lines after ``deps:`` that are
    indented deeper than it (or blank, or comments)."""
    found, stage = [], None
    for at, line in enumerate(lines):
        if stage_line := STAGE_LINE.match(line):
            stage = stage_line["name"]
        deps = DEPS_LINE.match(line)
        if deps is None:
            continue
        end = at + 1
        while end < len(lines) and (indent(lines[end]) > len(deps["indent"]) or lines[end].lstrip()[:1] in ("", "#")):
            end += 1
        found.append((stage, at + 1, end))
    return found


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def with_code(entries: list[str], code: tuple[str, ...]) -> list[str]:
    """A deps list's lines with its project-code entries replaced by ``code`` (paths), written where the first
    code entry was (else after the last entry); an entry that stays keeps its line, comment included."""
    old, kept, at, after_last = {}, [], None, 0
    for line in entries:
        entry = ENTRY_LINE.match(line)
        if entry and is_project_code(entry["path"]):
            old[entry["path"]] = line
            at = len(kept) if at is None else at
        else:
            kept.append(line)
            after_last = len(kept) if line.lstrip()[:1] not in ("", "#") else after_last
    at = after_last if at is None else at
    prefix = next((entry["indent"] for entry in map(ENTRY_LINE.match, entries) if entry), "      ")
    return kept[:at] + [old.get(path, f"{prefix}- {path}\n") for path in code] + kept[at:]


def rewrite(text: str) -> str:
    """``text`` (a dvc.yaml) with each stage's project-code deps replaced by :func:`stage_code` of its command."""
    commands = {name: stage["cmd"] for name, stage in yaml.safe_load(text)["stages"].items()}
    lines = text.splitlines(keepends=True)
    for stage, first, end in reversed(deps_lists(lines)):
        lines[first:end] = with_code(lines[first:end], stage_code(commands[stage]))
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dvc_deps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps (default: only show the change)")
    parser.add_argument("--dvc-yaml", type=Path, default=DVC_YAML)
    args = parser.parse_args(argv)
    text = args.dvc_yaml.read_text()
    new = rewrite(text)
    if new == text:
        print(f"{args.dvc_yaml}: code deps up to date")
        return 0
    if args.write:
        args.dvc_yaml.write_text(new)
        print(f"{args.dvc_yaml}: code deps rewritten")
        return 0
    sys.stdout.writelines(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                               str(args.dvc_yaml), f"{args.dvc_yaml} (computed code deps)"))
    print(f"{args.dvc_yaml}: code deps out of date; `python -m benchmarks.dvc_deps --write` rewrites them")
    return 1


if __name__ == "__main__":
    sys.exit(main())
