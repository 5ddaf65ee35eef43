"""runs carry the caller's key id (null for public and test runs), and history can page by key

Revision ID: d4a8e1b6c2f7
Revises: 3b7c1e9a4d20
Create Date: 2026-12-06 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d4a8e1b6c2f7"
down_revision = "3b7c1e9a4d20"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("key_id", sa.String(length=64), nullable=True), schema="runner")
    op.create_index(
        "ix_runner_runs_key_page",
        "runs",
        ["key_id", "created_at", "id"],
        unique=False,
        schema="runner",
        postgresql_where=sa.text("key_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_runner_runs_key_page", table_name="runs", schema="runner")
    op.drop_column("runs", "key_id", schema="runner")
