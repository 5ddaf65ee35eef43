"""caller keys: many keys per endpoint, each with a name, expiry, rate limit and spend cap

Every existing key becomes its endpoint's `default` key, with the same hash (it keeps working).

Revision ID: b7e2c4a91f30
Revises: 44c0a6b8684d
Create Date: 2026-12-06 17:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b7e2c4a91f30"
down_revision = "44c0a6b8684d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("id", sa.String(64), nullable=True), schema="keys")
    op.add_column("api_keys", sa.Column("name", sa.String(60), nullable=True), schema="keys")
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True)), schema="keys")
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True)), schema="keys")
    op.add_column("api_keys", sa.Column("rate_limit_per_minute", sa.Integer()), schema="keys")
    op.add_column("api_keys", sa.Column("spend_cap_cents", sa.BigInteger()), schema="keys")
    op.add_column(
        "api_keys",
        sa.Column("spend_cap_period", sa.String(8), server_default="month", nullable=False),
        schema="keys",
    )
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True)), schema="keys")
    op.execute("UPDATE keys.api_keys SET id = 'key_' || md5(random()::text || endpoint_id), name = 'default'")
    op.alter_column("api_keys", "id", nullable=False, schema="keys")
    op.alter_column("api_keys", "name", nullable=False, schema="keys")
    op.drop_constraint("api_keys_pkey", "api_keys", schema="keys")
    op.create_primary_key("api_keys_pkey", "api_keys", ["id"], schema="keys")
    op.create_index("ix_keys_api_keys_endpoint_id", "api_keys", ["endpoint_id"], schema="keys")


def downgrade() -> None:
    # Back to one key per endpoint: the newest unrevoked key of each stays.
    op.execute(
        "DELETE FROM keys.api_keys k WHERE k.revoked_at IS NOT NULL OR EXISTS (SELECT 1 FROM keys.api_keys n "
        "WHERE n.endpoint_id = k.endpoint_id AND n.revoked_at IS NULL AND (n.created_at, n.id) > (k.created_at, k.id))"
    )
    op.drop_index("ix_keys_api_keys_endpoint_id", table_name="api_keys", schema="keys")
    op.drop_constraint("api_keys_pkey", "api_keys", schema="keys")
    op.create_primary_key("api_keys_pkey", "api_keys", ["endpoint_id"], schema="keys")
    for column in (
        "revoked_at", "spend_cap_period", "spend_cap_cents", "rate_limit_per_minute", "last_used_at",
        "expires_at", "name", "id",
    ):  # fmt: skip
        op.drop_column("api_keys", column, schema="keys")
