"""payments: deposits, stripe events, customers, auto-recharge, refunds and disputes in the ledger

Revision ID: c85f5e5e5afe
Revises: 26b0a938a6e8
Create Date: 2026-12-06 17:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c85f5e5e5afe"
down_revision = "26b0a938a6e8"
branch_labels = None
depends_on = None

_OLD_SOURCES = (
    "(kind IN ('deposit', 'admin_credit') AND amount_cents > 0 AND credit_id IS NOT NULL AND charge_id IS NULL)"
    " OR (kind IN ('run_charge', 'settlement') AND amount_cents < 0 AND charge_id IS NOT NULL AND credit_id IS NULL)"
)
_NEW_SOURCES = (
    "(kind IN ('deposit', 'admin_credit') AND amount_cents > 0 AND credit_id IS NOT NULL AND charge_id IS NULL"
    " AND reversal_id IS NULL)"
    " OR (kind IN ('run_charge', 'settlement') AND amount_cents < 0 AND charge_id IS NOT NULL AND credit_id IS NULL"
    " AND reversal_id IS NULL)"
    " OR (kind IN ('refund', 'dispute') AND amount_cents < 0 AND reversal_id IS NOT NULL AND charge_id IS NULL"
    " AND credit_id IS NULL)"
)
_OLD_KINDS = "kind IN ('deposit', 'admin_credit', 'run_charge', 'settlement')"
_NEW_KINDS = "kind IN ('deposit', 'admin_credit', 'run_charge', 'settlement', 'refund', 'dispute')"


def _ledger_checks(kinds: str, sources: str) -> None:
    op.drop_constraint(op.f("ck_ledger_entries_kind_known"), "ledger_entries", schema="billing", type_="check")
    op.drop_constraint(op.f("ck_ledger_entries_kind_matches_source"), "ledger_entries", schema="billing", type_="check")
    op.create_check_constraint(op.f("ck_ledger_entries_kind_known"), "ledger_entries", kinds, schema="billing")
    op.create_check_constraint(
        op.f("ck_ledger_entries_kind_matches_source"), "ledger_entries", sources, schema="billing"
    )


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("credit_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_deposits_amount_positive")),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'expired')", name=op.f("ck_deposits_status_known")
        ),
        sa.CheckConstraint("source IN ('checkout', 'auto_recharge')", name=op.f("ck_deposits_source_known")),
        sa.CheckConstraint(
            "(status = 'succeeded') = (credit_id IS NOT NULL)", name=op.f("ck_deposits_succeeded_is_credited")
        ),
        sa.ForeignKeyConstraint(["credit_id"], ["billing.credits.id"], name=op.f("fk_deposits_credit_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deposits")),
        sa.UniqueConstraint("owner_id", "idempotency_key", name=op.f("uq_deposits_owner_id_idempotency_key")),
        sa.UniqueConstraint("checkout_session_id", name=op.f("uq_deposits_checkout_session_id")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_deposits_payment_intent_id")),
        sa.UniqueConstraint("credit_id", name=op.f("uq_deposits_credit_id")),
        schema="billing",
    )
    op.create_index("ix_deposits_owner_id_created_at", "deposits", ["owner_id", "created_at"], schema="billing")
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
        schema="billing",
    )
    op.create_table(
        "payment_customers",
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("payment_method_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_payment_customers")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_payment_customers_customer_id")),
        schema="billing",
    )
    op.create_table(
        "auto_recharges",
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("threshold_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("armed", sa.Boolean(), nullable=False),
        sa.Column("crossings", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "threshold_cents >= 0 AND amount_cents > 0 AND crossings >= 0", name=op.f("ck_auto_recharges_amounts_valid")
        ),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_auto_recharges")),
        schema="billing",
    )
    op.create_table(
        "reversals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("deposit_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("stripe_ref", sa.String(length=255), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("owed_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('refund', 'dispute')", name=op.f("ck_reversals_kind_known")),
        sa.CheckConstraint(
            "amount_cents > 0 AND owed_cents >= 0 AND owed_cents <= amount_cents", name=op.f("ck_reversals_owed_valid")
        ),
        sa.ForeignKeyConstraint(["deposit_id"], ["billing.deposits.id"], name=op.f("fk_reversals_deposit_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reversals")),
        sa.UniqueConstraint("kind", "stripe_ref", name=op.f("uq_reversals_kind_stripe_ref")),
        schema="billing",
    )
    op.create_index(
        "ix_reversals_owed", "reversals", ["owner_id", "created_at"], schema="billing",
        postgresql_where=sa.text("owed_cents > 0"),
    )  # fmt: skip
    # A nullable column without a default: no table rewrite, and the append-only trigger (UPDATE) is not fired.
    op.add_column("ledger_entries", sa.Column("reversal_id", sa.String(length=40), nullable=True), schema="billing")
    _ledger_checks(_NEW_KINDS, _NEW_SOURCES)


def downgrade() -> None:
    _ledger_checks(_OLD_KINDS, _OLD_SOURCES)  # fails while refund/dispute entries exist: the ledger is permanent
    op.drop_column("ledger_entries", "reversal_id", schema="billing")
    op.drop_index("ix_reversals_owed", table_name="reversals", schema="billing")
    op.drop_table("reversals", schema="billing")
    op.drop_table("auto_recharges", schema="billing")
    op.drop_table("payment_customers", schema="billing")
    op.drop_table("stripe_events", schema="billing")
    op.drop_index("ix_deposits_owner_id_created_at", table_name="deposits", schema="billing")
    op.drop_table("deposits", schema="billing")
