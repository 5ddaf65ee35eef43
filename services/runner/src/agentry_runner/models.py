"""Tables of the `runner` schema: one row per run, written when it starts (async) and when it ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Index, Integer, MetaData, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "runner"
TERMINAL = ("succeeded", "failed", "timeout")


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Run(Base):
    """A run: its input, outcome, tool calls and usage. A terminal row is never overwritten."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runner_runs_endpoint_page", "endpoint_id", "created_at", "id"),
        Index("ix_runner_runs_key_page", "key_id", "created_at", "id", postgresql_where=text("key_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    input: Mapped[Any] = mapped_column(JSONB)
    output: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    tool_errors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens_input: Mapped[int] = mapped_column(Integer, default=0)
    tokens_output: Mapped[int] = mapped_column(Integer, default=0)
    cost_cents: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    iterations: Mapped[int] = mapped_column(Integer, default=0)
    price_per_run_cents: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the caller's key; null: public, test


@dataclass(slots=True, frozen=True)
class StoredRun:
    """A `runs` row as the service reads and announces it: plain attributes, the table's columns exactly
    (a test holds them equal). Not an ORM instance: building one of those cost ~0.1 ms on every run's path."""

    id: str
    endpoint_id: str
    owner_id: str
    status: str
    is_test: bool
    input: Any
    output: Any
    tool_calls: list[dict[str, Any]]
    tool_errors: int
    tokens_input: int
    tokens_output: int
    cost_cents: float
    latency_ms: int
    iterations: int
    price_per_run_cents: int
    error_code: str | None
    error_message: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    key_id: str | None
