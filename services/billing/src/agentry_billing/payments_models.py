"""Tables of money coming in through Stripe: deposits, the Stripe events already processed, each owner's Stripe
customer and saved card, auto-recharge settings, and refunds/disputes that take money back.

Exactly-once is held by unique keys, not by the code's care: an event id is recorded once (`stripe_events`,
in the same transaction as its effect), a deposit is credited once (`deposits.credit_id` unique, and the
credit's own `(scope, idempotency_key)`), a refund level or a dispute is taken back once (`reversals`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

DEPOSIT_STATUSES = ("pending", "succeeded", "failed", "expired")
DEPOSIT_SOURCES = ("checkout", "auto_recharge")
REVERSAL_KINDS = ("refund", "dispute")


class Deposit(Base):
    """A payment asked of Stripe for a wallet; credits the wallet once, when Stripe confirms it."""

    __tablename__ = "deposits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    idempotency_key: Mapped[str] = mapped_column(String(255))
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    credit_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("credits.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint(f"status IN {DEPOSIT_STATUSES}", name="status_known"),
        CheckConstraint(f"source IN {DEPOSIT_SOURCES}", name="source_known"),
        CheckConstraint("(status = 'succeeded') = (credit_id IS NOT NULL)", name="succeeded_is_credited"),
        Index("ix_deposits_owner_id_created_at", "owner_id", "created_at"),
    )


class StripeEvent(Base):
    """A Stripe event processed (its effects committed with this row): a redelivery finds it and does nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentCustomer(Base):
    """An owner's Stripe Customer, and the card saved for off-session payments (auto-recharge)."""

    __tablename__ = "payment_customers"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AutoRecharge(Base):
    """Auto-recharge settings. `armed` is set while the balance is at or above the threshold; the charge that
    takes it below disarms it and starts one payment (crossing number `crossings`), so one crossing pays once."""

    __tablename__ = "auto_recharges"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    threshold_cents: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    armed: Mapped[bool] = mapped_column(Boolean)
    crossings: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("threshold_cents >= 0 AND amount_cents > 0 AND crossings >= 0", name="amounts_valid"),
    )


class Reversal(Base):
    """Money Stripe took back from a deposit (a refund or a dispute). What the balance covered was taken at
    once (ledger entries of its kind, `reversal_id` = this id); `owed_cents` is taken from the next credits."""

    __tablename__ = "reversals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(255))
    deposit_id: Mapped[str] = mapped_column(String(40), ForeignKey("deposits.id"))
    kind: Mapped[str] = mapped_column(String(16))
    stripe_ref: Mapped[str] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    owed_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("kind", "stripe_ref"),
        CheckConstraint(f"kind IN {REVERSAL_KINDS}", name="kind_known"),
        CheckConstraint("amount_cents > 0 AND owed_cents >= 0 AND owed_cents <= amount_cents", name="owed_valid"),
        Index("ix_reversals_owed", "owner_id", "created_at", postgresql_where=text("owed_cents > 0")),
    )
