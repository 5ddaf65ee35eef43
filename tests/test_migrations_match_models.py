"""Each service's migrations build exactly the tables its models declare: a model changed without a migration,
or a migration that differs from its model (a column, an index, a constraint), fails here rather than in a
deployment."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from agentry_common.db import async_url, upgrade
from agentry_common.subjects import SERVICES
from agentry_dev.stack import Stack

# Model modules beyond `models` whose tables join the service's metadata (as its migrations/env.py imports them).
EXTRA_MODELS = {"billing": ["payments_models", "spend_models"]}
# Tables only hand-written SQL touches (`usage_repository.py`: upserts and window queries), with no model.
SQL_ONLY = {"billing": {"usage_hourly", "usage_runs", "balance_alerts"}}


def _metadata(service: str) -> tuple[MetaData, str, Path]:
    package = importlib.import_module(f"agentry_{service}")
    for extra in EXTRA_MODELS.get(service, []):
        importlib.import_module(f"agentry_{service}.{extra}")
    models = importlib.import_module(f"agentry_{service}.models")
    return models.Base.metadata, models.SCHEMA, Path(package.__file__).parent / "migrations"


@pytest.mark.parametrize("service", SERVICES)
def test_the_migrations_at_head_build_exactly_the_models(servers: Stack, service: str) -> None:
    metadata, schema, migrations = _metadata(service)
    url = servers.create_database("drift")
    upgrade(migrations, url)

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        return not (type_ == "table" and name in {"alembic_version", *SQL_ONLY.get(service, set())})

    engine = create_engine(async_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_schemas": True, "include_name": include_name, "compare_type": True}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == [], "\n".join(str(d)[:200] for d in differences)
