"""usage: hourly usage buckets, per-run usage markers, low-balance alerts

Revision ID: 5b7e2c1d9a40
Revises: c3f1a7d2e845
Create Date: 2026-12-06 18:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "5b7e2c1d9a40"
down_revision = "c3f1a7d2e845"
branch_labels = None
depends_on = None


def _counter(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), server_default="", nullable=False),
        _counter("runs"),
        _counter("succeeded"),
        _counter("failed"),
        _counter("tokens_input"),
        _counter("tokens_output"),
        sa.Column("cost_cents", sa.Numeric(24, 6), server_default="0", nullable=False),
        _counter("charged_cents"),
        _counter("uncollected_cents"),
        sa.Column("latency_hist", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.CheckConstraint("date_trunc('hour', hour, 'UTC') = hour", name=op.f("ck_usage_hourly_whole_hour")),
        sa.PrimaryKeyConstraint("owner_id", "hour", "endpoint_id", "key_id", name=op.f("pk_usage_hourly")),
        schema="billing",
    )
    op.create_table(
        "usage_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_usage_runs")),
        schema="billing",
    )
    op.create_table(
        "balance_alerts",
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("low_balance_cents", sa.BigInteger(), nullable=True),
        sa.Column("armed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("crossings", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "low_balance_cents IS NULL OR low_balance_cents >= 0", name=op.f("ck_balance_alerts_threshold_valid")
        ),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_balance_alerts")),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("balance_alerts", schema="billing")
    op.drop_table("usage_runs", schema="billing")
    op.drop_table("usage_hourly", schema="billing")
