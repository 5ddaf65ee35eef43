"""Tables of the `billing` schema: wallets, their append-only ledger, run charges and credits.

The money invariant (sum of a wallet's ledger entries = its balance, never negative) is held by the database
itself, not only by the code that writes it:
- every entry carries the running balance after it and names its predecessor `(entry_no - 1, balance_after)`;
  a CHECK makes `balance_after = previous balance_after + amount`, and (owner_id, entry_no) is unique, so a
  wallet's entries form one unbroken chain that adds up;
- the wallet points at its newest entry through a DEFERRED foreign key on `(owner_id, last_entry_no,
  balance_cents)`, so at commit the balance is exactly the chain's running total;
- a statement trigger (in the migration) checks each INSERT of entries as a set: the predecessor exists with
  that balance, the wallet moved its pointer to the newest entry, and a charge's or credit's entry matches
  it (owner and amount). One set-based check per statement instead of four row-by-row foreign keys: the
  same guarantees, and batches of charges stay cheap;
- the ledger refuses UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Numeric,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "billing"


class Base(DeclarativeBase):
    metadata = MetaData(
        schema=SCHEMA,
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        },
    )


# One sequence orders ledger entries and charges together, so a wallet's activity pages by a single cursor.
activity_seq = Sequence("activity_seq", metadata=Base.metadata)

CHARGE_STATUSES = ("collected", "uncollected", "settled")
ENTRY_KINDS = ("deposit", "admin_credit", "run_charge", "settlement", "refund", "dispute")
CREDIT_KINDS = ("deposit", "admin_credit")


class Wallet(Base):
    """One per owner. Created on first credit or first charge; a user without one has a zero balance."""

    __tablename__ = "wallets"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    balance_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    lifetime_deposited_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    lifetime_spent_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    uncollected_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_entry_no: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("balance_cents >= 0", name="balance_not_negative"),
        CheckConstraint(
            "lifetime_deposited_cents >= 0 AND lifetime_spent_cents >= 0 AND uncollected_cents >= 0",
            name="totals_not_negative",
        ),
        CheckConstraint(
            "balance_cents = lifetime_deposited_cents - lifetime_spent_cents", name="balance_is_in_minus_out"
        ),
        CheckConstraint("last_entry_no IS NOT NULL OR lifetime_deposited_cents = 0", name="no_entries_no_money"),
        ForeignKeyConstraint(
            ["owner_id", "last_entry_no", "balance_cents"],
            ["ledger_entries.owner_id", "ledger_entries.entry_no", "ledger_entries.balance_after_cents"],
            name="balance_is_last_entry",
            deferrable=True,
            initially="DEFERRED",
            use_alter=True,
        ),
        # Room in each page, so a balance update stays a heap-only tuple update (no index write).
        {"postgresql_with": {"fillfactor": 80}},
    )


class Charge(Base):
    """The per-run price of one succeeded, priced, non-test run: at most one per run, ever."""

    __tablename__ = "charges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, activity_seq, server_default=activity_seq.next_value())
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    # No foreign key to wallets: its row-by-row check would tax every charge of a batch, and the charge's
    # wallet is locked (so created) first anyway; reconcile reports a charge without a wallet.
    owner_id: Mapped[str] = mapped_column(String(255))
    endpoint_id: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    cost_cents: Mapped[Decimal] = mapped_column(Numeric(20, 6), server_default="0")
    status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_by: Mapped[str | None] = mapped_column(String(40), ForeignKey("credits.id"))

    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("cost_cents >= 0", name="cost_not_negative"),
        CheckConstraint(f"status IN {CHARGE_STATUSES}", name="status_known"),
        CheckConstraint(
            "(status = 'settled') = (settled_at IS NOT NULL AND settled_by IS NOT NULL)",
            name="settled_has_credit",
        ),
        Index("ix_charges_owner_id_seq", "owner_id", "seq"),
        Index("ix_charges_settled_by", "settled_by", postgresql_where=text("settled_by IS NOT NULL")),
        Index("ix_charges_uncollected", "owner_id", "seq", postgresql_where=text("status = 'uncollected'")),
    )


class Credit(Base):
    """A deposit or admin credit, with the idempotency key it was asked with and the answer it got."""

    __tablename__ = "credits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(255), ForeignKey("wallets.owner_id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[str | None] = mapped_column(String(255))
    balance_after_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("scope", "idempotency_key"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint(f"kind IN {CREDIT_KINDS}", name="kind_known"),
    )


class LedgerEntry(Base):
    """An immutable movement of a wallet's money; signed (credits > 0, debits < 0)."""

    __tablename__ = "ledger_entries"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    entry_no: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger, activity_seq, server_default=activity_seq.next_value())
    kind: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    balance_after_cents: Mapped[int] = mapped_column(BigInteger)
    prev_entry_no: Mapped[int | None] = mapped_column(BigInteger)
    prev_balance_after_cents: Mapped[int | None] = mapped_column(BigInteger)
    charge_id: Mapped[str | None] = mapped_column(String(40))
    credit_id: Mapped[str | None] = mapped_column(String(40))
    run_id: Mapped[str | None] = mapped_column(String(64))
    endpoint_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reversal_id: Mapped[str | None] = mapped_column(String(40))  # refund/dispute (payments_models.Reversal)

    __table_args__ = (
        UniqueConstraint("owner_id", "entry_no", "balance_after_cents"),  # what the wallet's pointer references
        CheckConstraint(
            # Spelled so that it is never NULL (a NULL CHECK passes): both branches pin every column.
            "(entry_no = 1 AND prev_entry_no IS NULL AND prev_balance_after_cents IS NULL"
            " AND balance_after_cents = amount_cents)"
            " OR (entry_no > 1 AND prev_entry_no IS NOT NULL AND prev_balance_after_cents IS NOT NULL"
            " AND prev_entry_no = entry_no - 1"
            " AND balance_after_cents = prev_balance_after_cents + amount_cents)",
            name="running_balance",
        ),
        CheckConstraint("balance_after_cents >= 0", name="balance_not_negative"),
        CheckConstraint(f"kind IN {ENTRY_KINDS}", name="kind_known"),
        CheckConstraint(
            "(kind IN ('deposit', 'admin_credit') AND amount_cents > 0 AND credit_id IS NOT NULL"
            " AND charge_id IS NULL AND reversal_id IS NULL)"
            " OR (kind IN ('run_charge', 'settlement') AND amount_cents < 0 AND charge_id IS NOT NULL"
            " AND credit_id IS NULL AND reversal_id IS NULL)"
            " OR (kind IN ('refund', 'dispute') AND amount_cents < 0 AND reversal_id IS NOT NULL"
            " AND charge_id IS NULL AND credit_id IS NULL)",
            name="kind_matches_source",
        ),
        # A charge moves money at most once (collected at once, or settled later) and a credit exactly once.
        Index(
            "uq_ledger_entries_charge_id",
            "charge_id",
            unique=True,
            postgresql_where=text("charge_id IS NOT NULL"),
        ),
        Index(
            "uq_ledger_entries_credit_id",
            "credit_id",
            unique=True,
            postgresql_where=text("credit_id IS NOT NULL"),
        ),
        # Activity listing: run charges are listed from `charges`, so their entries stay out of this index.
        Index("ix_ledger_entries_activity", "owner_id", "seq", postgresql_where=text("kind <> 'run_charge'")),
    )
