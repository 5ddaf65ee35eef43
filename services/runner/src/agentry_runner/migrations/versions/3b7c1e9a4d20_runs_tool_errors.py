"""runs.tool_errors: how many of a run's tool calls failed

Revision ID: 3b7c1e9a4d20
Revises: e5d9fe270156
Create Date: 2026-12-06 17:40:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = "3b7c1e9a4d20"
down_revision = "e5d9fe270156"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("tool_errors", sa.Integer(), server_default="0", nullable=False), schema="runner")
    # Runs recorded before: their failed calls are the ones with an `error` in `tool_calls`.
    op.execute(
        "UPDATE runner.runs SET tool_errors = (SELECT count(*) FROM jsonb_array_elements(tool_calls) AS c"
        " WHERE jsonb_typeof(c->'error') = 'string') WHERE jsonb_array_length(tool_calls) > 0"
    )


def downgrade() -> None:
    op.drop_column("runs", "tool_errors", schema="runner")
