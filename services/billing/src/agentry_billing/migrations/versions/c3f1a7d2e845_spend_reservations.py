"""spend caps: per-(scope, period) counters and one reservation per capped run

Revision ID: c3f1a7d2e845
Revises: c85f5e5e5afe
Create Date: 2026-12-06 17:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c3f1a7d2e845"
down_revision = "c85f5e5e5afe"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend_counters",
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reserved_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("spent_cents >= 0 AND reserved_cents >= 0", name="ck_spend_counters_non_negative"),
        sa.PrimaryKeyConstraint("scope", "period_start", name="pk_spend_counters"),
        schema="billing",
    )
    op.create_table(
        "spend_reservations",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(10), server_default="held", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('held', 'settled', 'released')", name="ck_spend_reservations_status"),
        sa.CheckConstraint("amount_cents >= 0", name="ck_spend_reservations_amount"),
        sa.PrimaryKeyConstraint("run_id", name="pk_spend_reservations"),
        schema="billing",
    )
    # The sweeper looks only at holds (few at any time), oldest first.
    op.create_index(
        "ix_spend_reservations_held",
        "spend_reservations",
        ["created_at"],
        schema="billing",
        postgresql_where=sa.text("status = 'held'"),
    )


def downgrade() -> None:
    op.drop_index("ix_spend_reservations_held", table_name="spend_reservations", schema="billing")
    op.drop_table("spend_reservations", schema="billing")
    op.drop_table("spend_counters", schema="billing")
