"""The rules of money, without I/O: how a wallet's book moves, which runs are billable, what a credit settles."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from agentry_common.events import ChargeCollected, ChargeUncollected, RunCompleted

# Far above any real price or deposit (the API allows 10,000 and 50,000 cents); keeps sums inside BIGINT.
MAX_AMOUNT_CENTS = 100_000_000
MAX_COST_CENTS = 1e12
_EVENT_NAMESPACE = uuid.UUID("6f1d3c57-1c3a-4d0e-9a0b-6b1f0c2d9e11")

ChargeState = Literal["collected", "uncollected", "settled"]


class UnbillableEvent(ValueError):
    """A `run.completed` whose fields cannot be recorded as a charge (a producer bug, not a money problem)."""


class InsufficientFunds(Exception):
    """A debit the balance does not cover: callers check `Book.covers` first, so this is a bug guard."""


@dataclass(frozen=True)
class ChargeRun:
    """Command: charge the per-run price of one succeeded run to its endpoint owner's wallet."""

    event_id: str
    run_id: str
    endpoint_id: str
    owner_id: str
    price_cents: int
    cost_cents: Decimal

    @classmethod
    def from_event(cls, event: RunCompleted) -> ChargeRun | None:
        """The command a `run.completed` asks for, or None when the run is not billable (free or a test).

        Raises `UnbillableEvent` for an event that can never be stored (ids or price out of bounds).
        """
        if event.is_test or event.price_per_run_cents <= 0:
            return None
        for name, value, limit in (
            ("run_id", event.run_id, 64),
            ("endpoint_id", event.endpoint_id, 64),
            ("owner_id", event.owner_id, 255),
            ("id", event.id, 64),
        ):
            if not value or len(value) > limit:
                raise UnbillableEvent(f"{name} is empty or longer than {limit} characters")
        if event.price_per_run_cents > MAX_AMOUNT_CENTS:
            raise UnbillableEvent(f"price_per_run_cents exceeds {MAX_AMOUNT_CENTS}")
        return cls(
            event_id=event.id,
            run_id=event.run_id,
            endpoint_id=event.endpoint_id,
            owner_id=event.owner_id,
            price_cents=event.price_per_run_cents,
            cost_cents=_cost(event.usage.cost_cents),
        )


def _cost(cost_cents: float) -> Decimal:
    # Token cost is analytics, never money moved: an absurd value is clamped rather than blocking the charge.
    if not math.isfinite(cost_cents) or cost_cents < 0:
        return Decimal(0)
    return Decimal(str(min(cost_cents, MAX_COST_CENTS))).quantize(Decimal("0.000001"))


@dataclass(frozen=True)
class Posting:
    """One link of a wallet's ledger chain: the movement and the running balance it leads to."""

    entry_no: int
    amount_cents: int
    balance_after_cents: int
    prev_entry_no: int | None
    prev_balance_after_cents: int | None


@dataclass
class Book:
    """A wallet locked by the current unit of work. Postings extend its chain; the totals are written back."""

    owner_id: str
    balance_cents: int
    last_entry_no: int | None
    deposited_cents: int = 0
    spent_cents: int = 0
    uncollected_cents: int = 0
    postings: list[Posting] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.postings) or self.uncollected_cents != 0

    def covers(self, amount_cents: int) -> bool:
        return 0 < amount_cents <= self.balance_cents

    def credit(self, amount_cents: int) -> Posting:
        if amount_cents <= 0:
            raise ValueError("a credit must be positive")
        self.deposited_cents += amount_cents
        return self._post(amount_cents)

    def debit(self, amount_cents: int) -> Posting:
        if not self.covers(amount_cents):
            raise InsufficientFunds(f"{amount_cents} cents exceed the balance of {self.balance_cents}")
        self.spent_cents += amount_cents
        return self._post(-amount_cents)

    def _post(self, amount_cents: int) -> Posting:
        entry_no = (self.last_entry_no or 0) + 1
        posting = Posting(
            entry_no=entry_no,
            amount_cents=amount_cents,
            balance_after_cents=self.balance_cents + amount_cents,
            prev_entry_no=self.last_entry_no,
            prev_balance_after_cents=self.balance_cents if self.last_entry_no is not None else None,
        )
        self.balance_cents = posting.balance_after_cents
        self.last_entry_no = entry_no
        self.postings.append(posting)
        return posting


@dataclass(frozen=True)
class Debt:
    """An uncollected charge waiting for money, oldest first."""

    charge_id: str
    run_id: str
    endpoint_id: str
    amount_cents: int


def settle_oldest_first(book: Book, debts: Iterable[Debt]) -> list[tuple[Debt, Posting]]:
    """Settle debts in age order while the balance covers the next one; the first that does not fit stops
    settlement, so a younger, smaller debt never jumps the queue."""
    settled = []
    for debt in debts:
        if not book.covers(debt.amount_cents):
            break
        book.uncollected_cents -= debt.amount_cents
        settled.append((debt, book.debit(debt.amount_cents)))
    return settled


@dataclass(frozen=True)
class ChargeOutcome:
    """What became of a run's charge; published as `billing.charge.collected` / `.uncollected`."""

    charge_id: str
    run_id: str
    endpoint_id: str
    owner_id: str
    amount_cents: int
    state: ChargeState
    at: datetime

    @property
    def collected(self) -> bool:
        return self.state != "uncollected"

    def event(self) -> ChargeCollected | ChargeUncollected:
        """The outcome as an event whose id is derived from the charge, so a re-publish is the same event."""
        kind = "collected" if self.collected else "uncollected"
        event_id = "evt_" + uuid.uuid5(_EVENT_NAMESPACE, f"{self.charge_id}:{kind}").hex
        # Built from a charge the database already holds: nothing to validate, so construct directly.
        model: type[ChargeCollected | ChargeUncollected] = ChargeCollected if self.collected else ChargeUncollected
        return model.model_construct(
            id=event_id,
            occurred_at=self.at,
            charge_id=self.charge_id,
            run_id=self.run_id,
            endpoint_id=self.endpoint_id,
            owner_id=self.owner_id,
            amount_cents=self.amount_cents,
        )
