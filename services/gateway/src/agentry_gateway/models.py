"""Tables of the `gateway` schema: workspaces, MCP server registrations and the endpoint catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agentry_common.events import utcnow

SCHEMA = "gateway"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())


class McpServer(Base):
    __tablename__ = "mcp_servers"
    __table_args__ = (UniqueConstraint("workspace_id", "slug"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(Workspace.id, ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(60))
    url: Mapped[str] = mapped_column(String(2048))
    headers_secret_id: Mapped[str | None] = mapped_column(String(64))
    header_names: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    owner_id: Mapped[str] = mapped_column(String(255), index=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(Workspace.id), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    system_prompt: Mapped[str] = mapped_column(Text)
    agent_type: Mapped[str] = mapped_column(String(20))
    llm_provider: Mapped[str] = mapped_column(String(20))
    llm_model: Mapped[str] = mapped_column(String(100))
    llm_base_url: Mapped[str | None] = mapped_column(String(2048))
    llm_secret_id: Mapped[str | None] = mapped_column(String(64))
    max_tokens: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float] = mapped_column(Float)
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    output_format: Mapped[str] = mapped_column(String(20))
    max_tool_calls: Mapped[int] = mapped_column(Integer)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    enable_streaming: Mapped[bool] = mapped_column(Boolean)
    async_mode: Mapped[bool] = mapped_column(Boolean)
    auth_mode: Mapped[str] = mapped_column(String(20))
    price_per_run_cents: Mapped[int] = mapped_column(Integer)
    budget_cents: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str] = mapped_column(String(10), default="month", server_default="month")
    api_key_prefix: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), onupdate=utcnow
    )
