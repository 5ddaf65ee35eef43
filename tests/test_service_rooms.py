"""Every service has the same rooms and is wired the same way, so a reader who knows one knows all."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import httpx
from fastapi import FastAPI

from agentry_common.container import ServiceContainer
from agentry_dev.stack import SERVICES, Stack

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(ROOT.glob("services/*/src/agentry_*"))

# What every service has. Not in the list: `schemas.py` (only the gateway and the runner have wire shapes of
# their own; the others' requests and replies are `agentry_common`'s contracts).
ROOMS = [
    "settings.py",
    "models.py",
    "repository.py",
    "service.py",
    "metrics.py",
    "migrations/env.py",
    "entrypoints/api.py",
    "entrypoints/container.py",
    "entrypoints/broker.py",
]
# Module-level calls that would make a process-wide engine, session factory or container outside the lifespan.
BUILT_IN_THE_LIFESPAN = {"make_engine", "make_sessionmaker", "create_async_engine", "SqlDatabase", "Database"}


def _container_argument(api: Path) -> str:
    """The name `entrypoints/api.py` passes as `create_service_app(container=...)`."""
    for node in ast.walk(ast.parse(api.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "create_service_app":
            for keyword in node.keywords:
                if keyword.arg == "container" and isinstance(keyword.value, ast.Name):
                    return keyword.value.id
    raise AssertionError(f"{api} does not build its app with create_service_app(container=...)")


def test_every_service_has_the_same_rooms() -> None:
    assert [p.name for p in PACKAGES] == [
        "agentry_billing",
        "agentry_gateway",
        "agentry_keys",
        "agentry_runner",
        "agentry_webhooks",
    ]
    for package in PACKAGES:
        missing = [room for room in ROOMS if not (package / room).exists()]
        assert not missing, f"{package.name} lacks {missing}"
        name = _container_argument(package / "entrypoints/api.py")
        api = importlib.import_module(f"{package.name}.entrypoints.api")
        assert isinstance(api.app, FastAPI), package.name
        container = getattr(api, name)
        assert isinstance(container, type) and issubclass(container, ServiceContainer), (package.name, name)
        assert container.__module__ == f"{package.name}.entrypoints.container", container.__module__


def test_no_entrypoint_builds_a_database_at_import() -> None:
    for package in PACKAGES:
        for module in sorted((package / "entrypoints").glob("*.py")):
            for node in ast.parse(module.read_text()).body:
                if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
                    func = node.value.func
                    called = getattr(func, "id", None) or getattr(func, "attr", None)
                    assert called not in BUILT_IN_THE_LIFESPAN, f"{module.relative_to(ROOT)}: {called} at import"


def test_every_service_is_ready_once_its_broker_and_database_answer(stack: Stack) -> None:
    """`/readyz` asks each service's container: the runner pings its own pool, the others their engine."""
    for name in SERVICES:
        r = httpx.get(f"{stack.service(name).url}/readyz", timeout=10)
        assert r.status_code == 200, (name, r.text)
        assert r.json() == {"ready": True, "checks": {"nats": True, "postgres": True}}, name
