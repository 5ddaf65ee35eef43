"""`python -m agentry_common.migrate`: every service's Alembic migrations against DATABASE_URL, then exit.

The migrations image's command (deploy/docker/Dockerfile, the Kubernetes Job, compose's `migrate` step) and what
the development launcher runs before it starts the services. Idempotent: a database at head stays as it is.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from .db import upgrade
from .subjects import SERVICES


def migrations_dir(service: str) -> Path:
    """The Alembic folder of a service: `migrations/` inside its installed package."""
    package = importlib.import_module(f"agentry_{service}")
    assert package.__file__ is not None
    return Path(package.__file__).parent / "migrations"


def migrate_all(database_url: str) -> None:
    for name in SERVICES:
        upgrade(migrations_dir(name), database_url)


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    migrate_all(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
