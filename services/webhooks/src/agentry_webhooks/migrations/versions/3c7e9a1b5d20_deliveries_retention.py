"""deliveries retention: an index over finished deliveries by age, for the purge

Revision ID: 3c7e9a1b5d20
Revises: 18a9467bc4c4
Create Date: 2026-12-07 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "3c7e9a1b5d20"
down_revision = "18a9467bc4c4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_finished_created", "deliveries", ["created_at"], schema="webhooks",
        postgresql_where=sa.text("status <> 'pending'"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_deliveries_finished_created", table_name="deliveries", schema="webhooks")
