"""endpoint budgets: a run may hold in several scopes (its key's cap and its endpoint's budget); a counter remembers
the budget whose `budget.reached` it announced

Revision ID: d4e2b8c1f9a3
Revises: 5b7e2c1d9a40
Create Date: 2026-12-06 18:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d4e2b8c1f9a3"
down_revision = "5b7e2c1d9a40"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("pk_spend_reservations", "spend_reservations", schema="billing", type_="primary")
    op.create_primary_key("pk_spend_reservations", "spend_reservations", ["run_id", "scope"], schema="billing")
    op.add_column("spend_counters", sa.Column("reached_cap_cents", sa.BigInteger()), schema="billing")


def downgrade() -> None:
    op.drop_column("spend_counters", "reached_cap_cents", schema="billing")
    op.execute(
        "DELETE FROM billing.spend_reservations r USING billing.spend_reservations o "
        "WHERE r.run_id = o.run_id AND r.scope > o.scope"
    )
    op.drop_constraint("pk_spend_reservations", "spend_reservations", schema="billing", type_="primary")
    op.create_primary_key("pk_spend_reservations", "spend_reservations", ["run_id"], schema="billing")
