"""key expiry notices: the expiry each key's `key.expiring` event was published for

An index on `expires_at` (only keys that expire) lets the sweeper find the week's expiring keys without a scan.

Revision ID: c5d8e1f2a7b9
Revises: b7e2c4a91f30
Create Date: 2026-12-07 01:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c5d8e1f2a7b9"
down_revision = "b7e2c4a91f30"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expiry_announced_for", sa.DateTime(timezone=True)), schema="keys")
    op.create_index(
        "ix_keys_api_keys_expires_at", "api_keys", ["expires_at"], schema="keys",
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_keys_api_keys_expires_at", table_name="api_keys", schema="keys")
    op.drop_column("api_keys", "expiry_announced_for", schema="keys")
