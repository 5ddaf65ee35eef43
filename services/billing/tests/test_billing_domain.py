"""The rules of money, without I/O: books that always add up, billable runs, oldest-first settlement."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentry_billing.domain import (
    Book,
    ChargeOutcome,
    ChargeRun,
    Debt,
    InsufficientFunds,
    UnbillableEvent,
    settle_oldest_first,
)
from agentry_common.events import ChargeCollected, ChargeUncollected, RunCompleted, Usage

moves = st.lists(st.tuples(st.sampled_from(["credit", "debit"]), st.integers(1, 10_000)), max_size=60)


@given(start=st.integers(0, 50_000), moves=moves)
def test_a_book_never_goes_negative_and_its_entries_always_add_up_to_its_balance(start: int, moves: list) -> None:
    book = Book("owner", start, 3 if start else None)
    first = book.balance_cents
    for kind, amount in moves:
        if kind == "credit":
            book.credit(amount)
        elif book.covers(amount):
            book.debit(amount)
        else:
            with pytest.raises(InsufficientFunds):
                book.debit(amount)
        assert book.balance_cents >= 0
    assert book.balance_cents == first + sum(p.amount_cents for p in book.postings)
    assert book.balance_cents == first + book.deposited_cents - book.spent_cents
    previous_no, previous_after = (3, start) if start else (None, None)
    for posting in book.postings:  # an unbroken chain, as the database's constraints demand
        assert posting.prev_entry_no == previous_no and posting.prev_balance_after_cents == previous_after
        assert posting.entry_no == (previous_no or 0) + 1
        assert posting.balance_after_cents == (previous_after or 0) + posting.amount_cents
        previous_no, previous_after = posting.entry_no, posting.balance_after_cents


def test_the_first_entry_of_a_new_wallet_starts_the_chain() -> None:
    posting = Book("owner", 0, None).credit(500)
    assert (posting.entry_no, posting.prev_entry_no, posting.prev_balance_after_cents) == (1, None, None)
    assert posting.balance_after_cents == 500


def test_settlement_pays_debts_oldest_first_and_stops_at_the_first_that_does_not_fit() -> None:
    book = Book("owner", 10, 7)
    debts = [Debt("c1", "r1", "e", 4), Debt("c2", "r2", "e", 5), Debt("c3", "r3", "e", 2), Debt("c4", "r4", "e", 1)]
    settled = settle_oldest_first(book, debts)
    assert [d.charge_id for d, _ in settled] == ["c1", "c2"]  # c4 alone would fit, but c3 before it does not
    assert book.balance_cents == 1 and book.uncollected_cents == -9


def test_settlement_never_skips_an_older_debt_for_a_younger_smaller_one() -> None:
    book = Book("owner", 3, 1)
    assert settle_oldest_first(book, [Debt("old", "r1", "e", 5), Debt("young", "r2", "e", 1)]) == []
    assert book.balance_cents == 3 and not book.postings


@given(balance=st.integers(0, 1000), amounts=st.lists(st.integers(1, 300), max_size=20))
def test_settlement_takes_the_longest_affordable_prefix(balance: int, amounts: list[int]) -> None:
    book = Book("owner", balance, 1)
    debts = [Debt(f"c{i}", f"r{i}", "e", a) for i, a in enumerate(amounts)]
    settled = settle_oldest_first(book, debts)
    n = len(settled)
    assert sum(amounts[:n]) <= balance
    assert n == len(amounts) or sum(amounts[: n + 1]) > balance
    assert book.balance_cents == balance - sum(amounts[:n])


def _event(**fields: object) -> RunCompleted:
    defaults: dict[str, object] = {
        "run_id": "run_1",
        "endpoint_id": "aep_1",
        "owner_id": "u1",
        "price_per_run_cents": 5,
    }
    return RunCompleted(**{**defaults, **fields})


def test_a_priced_run_is_charged_its_price_and_records_its_token_cost() -> None:
    run = ChargeRun.from_event(_event(usage=Usage(cost_cents=0.3456789)))
    assert run is not None and run.price_cents == 5 and run.owner_id == "u1"
    assert run.cost_cents == Decimal("0.345679")


@pytest.mark.parametrize("fields", [{"price_per_run_cents": 0}, {"is_test": True}], ids=["free", "test run"])
def test_free_runs_and_owner_test_runs_are_never_charged(fields: dict[str, object]) -> None:
    assert ChargeRun.from_event(_event(**fields)) is None


@pytest.mark.parametrize(
    "fields",
    [{"owner_id": ""}, {"run_id": "r" * 65}, {"price_per_run_cents": 10**12}],
    ids=["no owner", "run id too long", "absurd price"],
)
def test_an_event_that_cannot_be_stored_is_refused_rather_than_truncated(fields: dict[str, object]) -> None:
    with pytest.raises(UnbillableEvent):
        ChargeRun.from_event(_event(**fields))


def test_an_absurd_token_cost_never_blocks_the_charge() -> None:
    run = ChargeRun.from_event(_event(usage=Usage(cost_cents=float("inf"))))
    assert run is not None and run.cost_cents == 0


def test_publishing_an_outcome_twice_publishes_the_same_event() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    outcome = ChargeOutcome("chg_1", "run_1", "aep_1", "u1", 5, "uncollected", at)
    first, second = outcome.event(), outcome.event()
    assert isinstance(first, ChargeUncollected)
    assert first.model_dump() == second.model_dump()
    assert first.msg_id() == "billing.charge.uncollected:chg_1"
    settled = ChargeOutcome("chg_1", "run_1", "aep_1", "u1", 5, "settled", at).event()
    assert isinstance(settled, ChargeCollected) and settled.id != first.id
