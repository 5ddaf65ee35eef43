"""Settings base: one `Settings` class per service subclasses this and is instantiated once."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None, frozen=True)

    environment: Environment = Field(
        "development", description="`production` refuses development defaults for secrets."
    )
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server(s), comma-separated.")
    nats_user: str | None = Field(None, description="NATS user of this service (least privilege).")
    nats_password: str | None = Field(None, description="NATS password of this service.")
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:55432/agentry",
        description="PostgreSQL URL (psycopg 3); the default is `make run`'s embedded server.",
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept per process.")
    log_level: str = Field("INFO", description="Python logging level.")
    rpc_timeout_s: float = Field(3.0, gt=0, description="How long to wait for another service's reply.")
    stream_replicas: int = Field(
        1, ge=1, le=5, description="Copies of every JetStream stream: 1 on one server, 3 on a NATS cluster (R3)."
    )

    @property
    def is_development(self) -> bool:
        return self.environment != "production"

    def refuse_default(self, name: str, value: str, default: str) -> None:
        """Outside development a deployment must set its own secrets."""
        if not self.is_development and value == default:
            raise ValueError(f"{name} must be set to a non-default value when ENVIRONMENT=production")
