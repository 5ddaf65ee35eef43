"""The reconciliation: every wallet checked against its ledger, and every charge, credit and reversal against the
entries that moved its money (the SQL is `audit_repository`'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from .audit_repository import AuditRepository


@dataclass
class WalletCheck:
    owner_id: str
    balance_cents: int
    ledger_cents: int
    problems: list[str] = field(default_factory=list)

    @property
    def drift_cents(self) -> int:
        return self.balance_cents - self.ledger_cents


def _wallet_problems(r: Any) -> list[str]:
    problems = []
    if r.balance_cents != r.ledger_cents:
        problems.append(f"balance {r.balance_cents} != ledger sum {r.ledger_cents}")
    if r.balance_cents < 0:
        problems.append("negative balance")
    if r.lifetime_deposited_cents != r.credited_cents:
        problems.append(f"lifetime deposited {r.lifetime_deposited_cents} != credits {r.credited_cents}")
    if r.lifetime_spent_cents != r.debited_cents:
        problems.append(f"lifetime spent {r.lifetime_spent_cents} != debits {r.debited_cents}")
    if r.uncollected_cents != r.owed_cents:
        problems.append(f"uncollected {r.uncollected_cents} != uncollected charges {r.owed_cents}")
    if r.last_entry_no != r.last_no or r.entries != (r.last_no or 0):
        problems.append(f"ledger chain has {r.entries} entries up to {r.last_no}, wallet ends at {r.last_entry_no}")
    if r.broken:
        problems.append(f"{r.broken} entries whose running balance is wrong")
    return problems


async def check_wallets(conn: AsyncConnection, owners: Sequence[str] | None = None) -> list[WalletCheck]:
    """Every wallet (or those of `owners`) with the problems found; run it in one repeatable-read snapshot."""
    audit = AuditRepository(conn)
    checks: dict[str, WalletCheck] = {}
    for r in await audit.wallets(owners):
        checks[r.owner_id] = WalletCheck(r.owner_id, r.balance_cents, r.ledger_cents, _wallet_problems(r))
    for r in await audit.charges_moved_wrongly(owners):
        check = checks.setdefault(r.owner_id, WalletCheck(r.owner_id, 0, 0, ["charges without a wallet"]))
        check.problems.append(f"charge of run {r.run_id} is {r.status} but moved money {r.entries} time(s)")
    for r in await audit.credits_moved_wrongly(owners):
        check = checks.setdefault(r.owner_id, WalletCheck(r.owner_id, 0, 0, ["credits without a wallet"]))
        check.problems.append(f"credit {r.id} of {r.amount_cents} cents is in the ledger {r.entries} time(s)")
    for r in await audit.reversals_moved_wrongly(owners):
        check = checks.setdefault(r.owner_id, WalletCheck(r.owner_id, 0, 0, ["reversals without a wallet"]))
        check.problems.append(f"{r.kind} {r.id} took {r.taken} cents but the ledger moved {r.moved}")
    return list(checks.values())
