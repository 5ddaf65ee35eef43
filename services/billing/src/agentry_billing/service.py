"""Billing use cases. Each runs inside one unit of work (one transaction) that the entrypoint opens and commits;
events leave only after that commit, from the entrypoint."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from agentry_common.errors import ValidationFailed
from agentry_common.requests import (
    Balance,
    Charges,
    ChargeStatus,
    Deposit,
    Deposited,
    Transaction,
    TransactionPage,
)

from . import payments_ledger, usage
from .domain import MAX_AMOUNT_CENTS, ChargeOutcome, ChargeRun, ChargeState, settle_oldest_first
from .payments_repository import Recharge
from .repository import BillingRepository, NewCharge, NewEntry
from .usage_repository import UsageRepository

log = logging.getLogger(__name__)

MAX_PAGE = 100
MAX_RUN_IDS = 1000
MAX_KEY_CHARS = 255
MAX_REASON_CHARS = 1000


def new_id(prefix: str) -> str:
    """Same shape as `agentry_common.events.new_id` (128 random bits), without building a UUID object."""
    return f"{prefix}_{secrets.token_hex(16)}"


class ChargeConflict(Exception):
    """Another transaction charged one of these runs first; the batch is retried and will find its charge."""


@dataclass
class ChargeBatch:
    """What a batch of `ChargeRun` commands did: outcomes to publish (new and already known) and counts."""

    outcomes: list[ChargeOutcome] = field(default_factory=list)
    new: list[ChargeOutcome] = field(default_factory=list)
    duplicates: int = 0
    recharges: list[Recharge] = field(default_factory=list)  # auto-recharges this batch's charges started


async def charge_runs(repo: BillingRepository, runs: Sequence[ChargeRun], auto_recharge: bool = False) -> ChargeBatch:
    """Charge each run once: collected if its owner's balance covers the price, else uncollected.

    Runs already charged (a replay, a redelivery, another replica) are not charged again; their existing
    outcome is returned so it is published again. Runs are decided in the order given (the stream's order).
    """
    batch = ChargeBatch()
    unique: dict[str, ChargeRun] = {}
    for run in runs:
        if run.run_id in unique:
            batch.duplicates += 1
        else:
            unique[run.run_id] = run
    if not unique:
        return batch
    books = await repo.lock_wallets([r.owner_id for r in unique.values()])
    # Holding every owner's wallet makes this read race-free: whoever charges a run holds its owner's wallet.
    known = await repo.find_charges(list(unique))
    charges: list[NewCharge] = []
    entries: list[NewEntry] = []
    for run in unique.values():
        if run.run_id in known:
            existing = known[run.run_id]
            if existing.owner_id != run.owner_id or existing.amount_cents != run.price_cents:
                log.warning("replayed run.completed disagrees with its charge", extra={"run_id": run.run_id})
            continue
        book = books[run.owner_id]
        charge_id = new_id("chg")
        state: ChargeState
        if book.covers(run.price_cents):
            state = "collected"
            posting = book.debit(run.price_cents)
            entries.append(
                NewEntry(new_id("txn"), run.owner_id, "run_charge", posting, charge_id=charge_id,
                         run_id=run.run_id, endpoint_id=run.endpoint_id)
            )  # fmt: skip
        else:
            state = "uncollected"
            book.uncollected_cents += run.price_cents
        charges.append(
            NewCharge(charge_id, run.run_id, run.owner_id, run.endpoint_id, run.price_cents, run.cost_cents,
                      state, run.event_id)
        )  # fmt: skip
    if charges:
        inserted, created_at = await repo.insert_charges(charges)
        if inserted != len(charges):
            raise ChargeConflict(f"{len(charges) - inserted} of {len(charges)} runs were charged concurrently")
    # Wallets first: the ledger refuses entries that their wallet has not moved to.
    changed = [b for b in books.values() if b.changed]
    await repo.write_back(changed)
    await repo.insert_entries(entries)
    if auto_recharge and changed:
        batch.recharges = await payments_ledger.fire_crossings(repo, changed)
    for c in charges:
        outcome = ChargeOutcome(c.id, c.run_id, c.endpoint_id, c.owner_id, c.amount_cents, c.state, created_at)
        batch.new.append(outcome)
        batch.outcomes.append(outcome)
    batch.outcomes.extend(known.values())
    batch.duplicates += len(known)
    return batch


@dataclass
class Credited:
    deposited: Deposited
    settled: list[ChargeOutcome]
    credit_id: str | None = None  # `crd_…`: how `GET /api/balance/deposits` lists a manual-mode deposit


def _fingerprint(cmd: Deposit) -> str:
    body = {
        "owner_id": cmd.owner_id,
        "amount_cents": cmd.amount_cents,
        "kind": cmd.kind,
        "reason": cmd.reason,
        "actor_id": cmd.actor_id,
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _check_credit(cmd: Deposit) -> None:
    if cmd.amount_cents <= 0:
        raise ValidationFailed("amount_cents: must be a positive number of cents")
    if cmd.amount_cents > MAX_AMOUNT_CENTS:
        raise ValidationFailed(f"amount_cents: must be at most {MAX_AMOUNT_CENTS}")
    if not cmd.idempotency_key or len(cmd.idempotency_key) > MAX_KEY_CHARS:
        raise ValidationFailed(f"idempotency_key: required, at most {MAX_KEY_CHARS} characters")
    if not cmd.owner_id or len(cmd.owner_id) > MAX_KEY_CHARS:
        raise ValidationFailed("owner_id: required, at most 255 characters")
    if cmd.actor_id is not None and len(cmd.actor_id) > MAX_KEY_CHARS:
        raise ValidationFailed("actor_id: at most 255 characters")
    if cmd.reason is not None and len(cmd.reason) > MAX_REASON_CHARS:
        raise ValidationFailed(f"reason: at most {MAX_REASON_CHARS} characters")


async def credit_wallet(repo: BillingRepository, cmd: Deposit) -> Credited:
    """Credit a wallet once per idempotency key, then settle its uncollected charges oldest first.

    The key belongs to whoever asked (the admin for admin credits, else the owner). The same key with the
    same request answers the original result; with a different request it is refused.
    """
    _check_credit(cmd)
    scope = cmd.actor_id or cmd.owner_id
    fingerprint = _fingerprint(cmd)
    book = (await repo.lock_wallets([cmd.owner_id]))[cmd.owner_id]
    existing = await repo.find_credit(scope, cmd.idempotency_key)
    if existing is not None:
        if existing.fingerprint != fingerprint:
            raise ValidationFailed(
                "this Idempotency-Key was already used for a different request", code="idempotency_key_reused"
            )
        transaction = Transaction(
            id=await repo.credit_entry_id(existing.id),
            kind=existing.kind,
            amount_cents=existing.amount_cents,
            status="completed",
            created_at=existing.created_at,
        )
        deposited = Deposited(transaction=transaction, balance_cents=existing.balance_after_cents, replayed=True)
        return Credited(deposited, await repo.settled_by(existing.id), existing.id)

    credit_id, entry_id = new_id("crd"), new_id("txn")
    credit_posting = book.credit(cmd.amount_cents)
    taken_back = await payments_ledger.take_back_owed(repo, book)
    settlements = settle_oldest_first(book, await repo.settleable_debts(cmd.owner_id, book.balance_cents))
    created_at = await repo.insert_credit(
        id=credit_id,
        scope=scope,
        idempotency_key=cmd.idempotency_key,
        fingerprint=fingerprint,
        owner_id=cmd.owner_id,
        kind=cmd.kind,
        amount_cents=cmd.amount_cents,
        reason=cmd.reason,
        actor_id=cmd.actor_id,
        balance_after_cents=book.balance_cents,
    )
    if created_at is None:
        # The same actor used this key for another wallet at the same instant; that one won.
        raise ValidationFailed(
            "this Idempotency-Key was already used for a different request", code="idempotency_key_reused"
        )
    entries = [NewEntry(entry_id, cmd.owner_id, cmd.kind, credit_posting, credit_id=credit_id), *taken_back]
    entries += [
        NewEntry(new_id("txn"), cmd.owner_id, "settlement", posting, charge_id=debt.charge_id,
                 run_id=debt.run_id, endpoint_id=debt.endpoint_id)
        for debt, posting in settlements
    ]  # fmt: skip
    await repo.write_back([book])
    await repo.insert_entries(entries)
    await payments_ledger.rearm_auto_recharge(repo, book)
    if settlements and await repo.mark_settled([d.charge_id for d, _ in settlements], credit_id) != len(settlements):
        raise RuntimeError("an uncollected charge changed while its wallet was locked")
    await usage.after_credit(UsageRepository(repo.session), book, [(d.run_id, d.amount_cents) for d, _ in settlements])
    transaction = Transaction(
        id=entry_id, kind=cmd.kind, amount_cents=cmd.amount_cents, status="completed", created_at=created_at
    )
    deposited = Deposited(transaction=transaction, balance_cents=book.balance_cents, replayed=False)
    return Credited(deposited, await repo.settled_by(credit_id) if settlements else [], credit_id)


async def balance(repo: BillingRepository, owner_id: str) -> Balance:
    wallet = await repo.get_wallet(owner_id)
    if wallet is None:
        return Balance(balance_cents=0, lifetime_deposited_cents=0, lifetime_spent_cents=0, uncollected_cents=0)
    return Balance(
        balance_cents=wallet.balance_cents,
        currency=wallet.currency,
        lifetime_deposited_cents=wallet.lifetime_deposited_cents,
        lifetime_spent_cents=wallet.lifetime_spent_cents,
        uncollected_cents=wallet.uncollected_cents,
    )


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        seq = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        seq = 0
        prefix = ""
    if prefix != "seq" or seq <= 0:
        raise ValidationFailed("cursor: not a cursor this API returned", code="invalid_cursor")
    return seq


async def transactions(repo: BillingRepository, owner_id: str, limit: int, cursor: str | None) -> TransactionPage:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit: must be between 1 and {MAX_PAGE}")
    before = _decode_cursor(cursor) if cursor else None
    rows = await repo.activity(owner_id, before, limit + 1)
    page = rows[:limit]
    items = [
        Transaction(
            id=r.id,
            kind=r.kind,
            amount_cents=r.amount_cents,
            run_id=r.run_id,
            endpoint_id=r.endpoint_id,
            status=r.status,
            created_at=r.created_at,
        )
        for r in page
    ]
    next_cursor = _encode_cursor(page[-1].seq) if len(rows) > limit else None
    return TransactionPage(transactions=items, next_cursor=next_cursor)


async def charges(repo: BillingRepository, run_ids: Sequence[str]) -> Charges:
    if len(run_ids) > MAX_RUN_IDS:
        raise ValidationFailed(f"run_ids: at most {MAX_RUN_IDS} per request")
    if not run_ids:
        return Charges(charges={})
    rows = await repo.charge_states(list(dict.fromkeys(run_ids)))
    return Charges(
        charges={
            r.run_id: ChargeStatus(
                amount_cents=r.amount_cents, status="uncollected" if r.status == "uncollected" else "collected"
            )
            for r in rows
        }
    )
