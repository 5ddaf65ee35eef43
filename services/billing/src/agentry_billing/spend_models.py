"""Tables of spend caps (in the `billing` schema): what each capped scope spent and holds, per period.

A scope is what a cap belongs to (`key:<key_id>`, or `endpoint:<endpoint_id>` for a budget). A run of a
capped scope holds its price at admission (`spend_reservations`, one row per run and scope), counted in its period's
`reserved_cents`; the hold becomes `spent_cents` when the run completes, or goes back when it fails.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class SpendCounter(Base):
    __tablename__ = "spend_counters"
    __table_args__ = (CheckConstraint("spent_cents >= 0 AND reserved_cents >= 0", name="non_negative"),)

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    spent_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    reserved_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The budget whose `budget.reached` was announced for this period (raising the budget re-arms it).
    reached_cap_cents: Mapped[int | None] = mapped_column(BigInteger)


class SpendReservation(Base):
    __tablename__ = "spend_reservations"
    __table_args__ = (
        CheckConstraint("status IN ('held', 'settled', 'released')", name="status"),
        CheckConstraint("amount_cents >= 0", name="amount"),
        Index("ix_spend_reservations_held", "created_at", postgresql_where=text("status = 'held'")),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)  # a run holds in each scope limiting it
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), server_default="held")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
