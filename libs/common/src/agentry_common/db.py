"""Database plumbing: async engine and session factories, and Alembic helpers. Each service owns one schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import MetaData, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

# The database is down, restarting or out of connections: the request may succeed if retried (answer 503).
UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    psycopg.OperationalError,  # services that talk to psycopg directly (the runner)
    psycopg.InterfaceError,
)


def async_url(url: str) -> str:
    """`postgresql://…` → the psycopg 3 dialect URL SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def _alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """Alembic is imported here, not at the top: a service never migrates (`migrate` and the dev launcher do),
    and importing it cost every service process ~0.15 s at start."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """Run a service's Alembic migrations (its own schema and version table) up to `revision`."""
    from alembic import command

    command.upgrade(_alembic_config(migrations_dir, database_url), revision)


def autogenerate(migrations_dir: Path, database_url: str, message: str) -> None:
    """Write a new revision from the difference between the models and a database at head."""
    from alembic import command

    cfg = _alembic_config(migrations_dir, database_url)
    command.upgrade(cfg, "head")
    command.revision(cfg, message=message, autogenerate=True)


def run_alembic_env(metadata: MetaData, schema: str) -> None:
    """The body of every service's `migrations/env.py`: online migrations inside the service's schema."""
    from alembic import context
    from sqlalchemy import create_engine

    cfg = context.config
    url = cfg.attributes.get("database_url") or cfg.get_main_option("sqlalchemy.url")
    engine = create_engine(async_url(str(url)))

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "schema" or name == schema

    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=conn,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=include_name,
        )
        context.run_migrations()
    engine.dispose()
