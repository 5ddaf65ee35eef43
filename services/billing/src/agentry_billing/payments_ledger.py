"""What payments add to every credit of a wallet (called by `service.credit_wallet`, wallet locked): refunds
and disputes still owed are taken back first, and auto-recharge is armed again once the balance is back at or
above its threshold. Apart from `payments` so that `service` does not import Stripe's use cases."""

from __future__ import annotations

from agentry_common.events import new_id

from .domain import Book
from .payments_repository import PaymentsRepository, Recharge
from .repository import BillingRepository, NewEntry


async def take_back_owed(repo: BillingRepository, book: Book) -> list[NewEntry]:
    """Refunds and disputes still owed, oldest first, as far as the (just credited) balance goes; before
    uncollected charges are settled, as that money was never the wallet's."""
    prepo = PaymentsRepository(repo.session)
    entries, taken = [], []
    for owed in await prepo.owed_reversals(book.owner_id):
        amount = min(owed.owed_cents, book.balance_cents)
        if amount <= 0:
            break
        entries.append(NewEntry(new_id("txn"), book.owner_id, owed.kind, book.debit(amount), reversal_id=owed.id))
        taken.append((owed.id, amount))
    await prepo.reduce_owed(taken)
    return entries


async def rearm_auto_recharge(repo: BillingRepository, book: Book) -> None:
    await PaymentsRepository(repo.session).rearm(book.owner_id, book.balance_cents)


async def fire_crossings(repo: BillingRepository, books: list[Book]) -> list[Recharge]:
    """Auto-recharges the charges just made start (one per crossing of the threshold), in the charge's
    transaction; their payments are started by the consumer once it commits."""
    return await PaymentsRepository(repo.session).fire_crossings({b.owner_id: b.balance_cents for b in books})
