"""endpoint budgets: budget_cents (null: none) and budget_period

Revision ID: b7c3e5a1d2f4
Revises: 68d452d319df
Create Date: 2026-12-06 18:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b7c3e5a1d2f4"
down_revision = "68d452d319df"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("endpoints", sa.Column("budget_cents", sa.BigInteger()), schema="gateway")
    op.add_column(
        "endpoints",
        sa.Column("budget_period", sa.String(10), server_default="month", nullable=False),
        schema="gateway",
    )


def downgrade() -> None:
    op.drop_column("endpoints", "budget_period", schema="gateway")
    op.drop_column("endpoints", "budget_cents", schema="gateway")
