"""The version of the code behind a result: a hash of a module's source and of every project module it
imports, directly or not (found by reading the import statements), so that a persisted output whose
content address includes it never outlives a change of the code that made it, and a change elsewhere in
the project does not invalidate it."""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

# The settings' schema and the error types: no result is computed there, and the resolved settings enter every
# address as values (a new setting, a changed default or limit changes them there), so a change of their code (a
# validation rule, a message) must not make every persisted output stale. Not followed, not hashed; nor is an
# experiment package's own schema (a module named ``schema``).
SETTINGS_MODULES = ("losstopo.config", "losstopo.errors")
SCHEMA_MODULE = "schema"


def is_settings_module(module: str) -> bool:
    return module in SETTINGS_MODULES or module.rpartition(".")[2] == SCHEMA_MODULE


ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the project's packages


def project_packages(root: Path) -> tuple[str, ...]:
    """This package and those of the experiment modules that ``root``'s pyproject.toml lists ([tool.losstopo]
    experiments, losstopo.registry); this package alone where there is no such list (e.g. an installed copy)."""
    from losstopo.errors import ConfigError
    from losstopo.registry import experiment_modules

    own = __name__.partition(".")[0]
    try:
        listed = experiment_modules(root / "pyproject.toml") if (root / "pyproject.toml").is_file() else []
    except ConfigError:
        listed = []
    return tuple(dict.fromkeys([own, *(module.partition(".")[0] for module in listed)]))


PROJECT_PACKAGES = project_packages(ROOT)


def _source(module: str) -> Path | None:
    """The file of a project module, found without importing anything (None: not a project module, or a
    name imported from a module rather than a module)."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(module: str, path: Path) -> set[str]:
    """Project modules named by ``path``'s import statements (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imported_modules(package, ast.parse(path.read_text(), str(path)))


def _imported_modules(package: str, tree: ast.AST) -> set[str]:
    """Project modules named by the import statements anywhere in ``tree`` (code of a module of ``package``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {name for name in found if name.split(".")[0] in PROJECT_PACKAGES}


@functools.cache
def module_closure(*modules: str, settings: bool = False) -> tuple[Path, ...]:
    """The source files of ``modules`` and of every project module they import, transitively, sorted; the settings
    modules (:func:`is_settings_module`) neither count nor are followed unless ``settings`` (DVC's deps: every file
    that runs)."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = None if is_settings_module(name) and not settings else _source(name)
        if path is None:
            continue
        seen[name] = path
        todo += sorted(_imports(name, path) - set(seen))
    return tuple(sorted(set(seen.values())))


@functools.cache
def module_version(*modules: str) -> str:
    """Hash of the sources in :func:`module_closure` (paths relative to the project, then contents)."""
    digest = hashlib.sha256()
    for path in module_closure(*modules):
        digest.update(f"{path.parent.name}/{path.name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
