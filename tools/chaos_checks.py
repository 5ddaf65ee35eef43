"""The invariants of ARCHITECTURE.md §5, checked after a chaos run straight in PostgreSQL (and NATS for quiescence).

A test tool may read every service's tables: it is the auditor, not a service. Each check counts violations;
zero everywhere is a pass. `reconcile` (billing's own command) is run too, as a second opinion on the books.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psycopg

from agentry_common import subjects

TERMINAL = ("succeeded", "failed", "timeout")


@dataclass
class Expectation:
    """What the load generator saw for one run it was answered about."""

    kind: str
    owner: str
    http_status: int
    accepted: bool


@dataclass
class Books:
    """What the load generator deposited, per owner: deposit id → cents (each paid on Stripe, its webhooks
    accepted), and what the fake Stripe saw: deposits paid, cents taken back per PaymentIntent, checkouts
    abandoned."""

    deposits: dict[str, dict[str, int]] = field(default_factory=dict)
    prices: dict[str, int] = field(default_factory=dict)
    stripe_paid: dict[str, int] = field(default_factory=dict)
    stripe_taken_back: dict[str, int] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)


# --- quiescence ---


async def _consumer_idle(js: Any, stream: str, durable: str) -> bool:
    try:
        info = await js.consumer_info(stream, durable)
    except Exception:
        return False
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def _terminal_count(conn: psycopg.AsyncConnection[Any], run_ids: list[str]) -> int:
    cur = await conn.execute("SELECT count(*) FROM runner.runs WHERE id = ANY(%s) AND status = ANY(%s)",
                             (run_ids, list(TERMINAL)))  # fmt: skip
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _activity(conn: psycopg.AsyncConnection[Any]) -> tuple[int, ...]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM runner.runs), (SELECT count(*) FROM runner.runs WHERE status = ANY(%s)),"
        " (SELECT count(*) FROM billing.charges), (SELECT count(*) FROM billing.ledger_entries)",
        (list(TERMINAL),),
    )
    row = await cur.fetchone()
    return tuple(int(v) for v in row) if row else ()


async def wait_for_quiescence(nats_url: str, database_url: str, accepted: list[str], timeout_s: float) -> float:
    """Until every accepted run is terminal, both consumers have nothing pending or unacknowledged, and the
    row counts hold still across three polls. Returns the seconds waited (-1 when the timeout hit first)."""
    started = time.monotonic()
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream()
    still, last = 0, None
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while time.monotonic() - started < timeout_s:
                done = await _terminal_count(conn, accepted) == len(accepted)
                idle = await _consumer_idle(js, subjects.RUNS_STREAM.name, subjects.RUNNER_CONSUMER)
                idle = idle and await _consumer_idle(js, subjects.RUN_EVENTS_STREAM.name, subjects.BILLING_CONSUMER)
                counts = await _activity(conn)
                still = still + 1 if (done and idle and counts == last) else 0
                last = counts
                if still >= 3:
                    return time.monotonic() - started
                await asyncio.sleep(0.5)
    finally:
        await nc.close()
    return -1.0


# --- the invariants ---

# Charges per billable run (succeeded, priced, non-test): exactly one each.
_BILLABLE = """
SELECT r.id, count(c.id) AS charges
FROM runner.runs AS r LEFT JOIN billing.charges AS c ON c.run_id = r.id
WHERE r.status = 'succeeded' AND r.price_per_run_cents > 0 AND NOT r.is_test
GROUP BY r.id HAVING count(c.id) <> 1
"""
# Charges that should not exist, or disagree with their run.
_WRONG = """
SELECT c.run_id, r.status, r.is_test, r.price_per_run_cents, c.amount_cents
FROM billing.charges AS c LEFT JOIN runner.runs AS r ON r.id = c.run_id
WHERE r.id IS NULL OR r.status <> 'succeeded' OR r.is_test OR r.price_per_run_cents <= 0
   OR c.amount_cents <> r.price_per_run_cents OR c.owner_id <> r.owner_id OR c.endpoint_id <> r.endpoint_id
"""
# Money moved for a charge: collected/settled exactly once, uncollected never.
_MOVED = """
SELECT c.run_id, c.status, count(e.entry_no) AS entries
FROM billing.charges AS c LEFT JOIN billing.ledger_entries AS e ON e.charge_id = c.id
GROUP BY c.id HAVING count(e.entry_no) <> CASE WHEN c.status = 'uncollected' THEN 0 ELSE 1 END
"""
_DEBITS_PER_RUN = """
SELECT run_id, count(*) FROM billing.ledger_entries
WHERE kind IN ('run_charge', 'settlement') GROUP BY run_id HAVING count(*) > 1
"""
_WALLETS = """
SELECT w.owner_id, w.balance_cents, coalesce(sum(e.amount_cents), 0)::bigint AS ledger,
       coalesce(min(e.balance_after_cents), 0) AS lowest, w.uncollected_cents
FROM billing.wallets AS w LEFT JOIN billing.ledger_entries AS e USING (owner_id)
GROUP BY w.owner_id
"""
# Per Stripe deposit: its row, the credits keyed by it (Stripe's credits use the deposit id as their key), and
# the ledger `deposit` entries of those credits.
_DEPOSITS = """
SELECT d.id, d.owner_id, d.status, d.amount_cents, d.payment_intent_id,
       (SELECT count(*) FROM billing.credits AS c WHERE c.idempotency_key = d.id) AS credits,
       (SELECT count(*) FROM billing.ledger_entries AS e JOIN billing.credits AS c ON c.id = e.credit_id
        WHERE c.idempotency_key = d.id AND e.kind = 'deposit') AS entries,
       (SELECT coalesce(sum(e.amount_cents), 0) FROM billing.ledger_entries AS e
        JOIN billing.credits AS c ON c.id = e.credit_id WHERE c.idempotency_key = d.id AND e.kind = 'deposit') AS cents
FROM billing.deposits AS d
"""
# Money taken back per deposit (refunds and disputes) and per owner: recorded, still owed, and in the ledger.
_REVERSALS = """
SELECT r.owner_id, d.payment_intent_id, r.amount_cents, r.owed_cents,
       (SELECT coalesce(sum(-e.amount_cents), 0) FROM billing.ledger_entries AS e WHERE e.reversal_id = r.id) AS taken
FROM billing.reversals AS r JOIN billing.deposits AS d ON d.id = r.deposit_id
"""
_CHARGE_TOTALS = """
SELECT owner_id, coalesce(sum(amount_cents) FILTER (WHERE status IN ('collected', 'settled')), 0)::bigint,
       count(*) FILTER (WHERE status = 'uncollected'), count(*) FILTER (WHERE status = 'settled')
FROM billing.charges GROUP BY owner_id
"""


async def _rows(conn: psycopg.AsyncConnection[Any], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return list(await cur.fetchall())


async def check(database_url: str, answers: Mapping[str, Expectation], books: Books) -> dict[str, Any]:
    """Every invariant, counted, from one repeatable-read snapshot of the database."""
    accepted = [run_id for run_id, a in answers.items() if a.accepted]
    out: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        async with conn.transaction():
            runs = {r[0]: r for r in await _rows(
                conn, "SELECT id, status, is_test, price_per_run_cents, error_code, attempts FROM runner.runs"
            )}  # fmt: skip
            missing_charge = await _rows(conn, _BILLABLE)
            wrong = await _rows(conn, _WRONG)
            moved = await _rows(conn, _MOVED)
            debits = await _rows(conn, _DEBITS_PER_RUN)
            wallets = await _rows(conn, _WALLETS)
            totals = {r[0]: r[1:] for r in await _rows(conn, _CHARGE_TOTALS)}
            credits = await _rows(conn, "SELECT owner_id, idempotency_key, amount_cents FROM billing.credits")
            deposits = await _rows(conn, _DEPOSITS)
            reversals = await _rows(conn, _REVERSALS)
            extra_charges = await _rows(
                conn, "SELECT run_id, count(*) FROM billing.charges GROUP BY run_id HAVING count(*) > 1"
            )

    lost = [r for r in accepted if r not in runs or runs[r][1] not in TERMINAL]
    out["accepted"] = len(accepted)
    out["lost"] = len(lost)
    out["lost_sample"] = lost[:5]
    out["runs_by_status"] = dict(Counter(r[1] for r in runs.values()))
    out["redelivered_runs"] = sum(1 for r in runs.values() if (r[5] or 1) > 1)
    out["failed_by_code"] = dict(Counter(r[4] for r in runs.values() if r[1] != "succeeded"))
    # A synchronous caller was told the outcome: the record must say the same.
    told = {200: "succeeded", 502: "failed"}
    out["answer_mismatch"] = sum(
        1 for run_id, a in answers.items()
        if a.kind != "async" and a.http_status in told and run_id in runs and runs[run_id][1] != told[a.http_status]
    )  # fmt: skip
    out["missing_charges"] = sum(1 for _, n in missing_charge if n == 0)
    out["double_charges"] = (
        sum(n - 1 for _, n in missing_charge if n > 1)
        + sum(n - 1 for _, n in extra_charges)
        + sum(1 for _, status, n in moved if n > (0 if status == "uncollected" else 1))
        + sum(n - 1 for _, n in debits)
    )
    out["charges_without_money_moved"] = sum(1 for _, status, n in moved if status != "uncollected" and n == 0)
    out["wrong_charges"] = len(wrong)
    out["wallets"] = len(wallets)
    out["ledger_drift_cents"] = sum(abs(balance - ledger) for _, balance, ledger, _, _ in wallets)
    out["negative_wallets"] = sum(1 for _, balance, _, lowest, _ in wallets if balance < 0 or lowest < 0)

    # Independent of billing's own bookkeeping: what we deposited minus what its charges say it collected.
    deposited: dict[str, int] = {}
    seen_keys: Counter[tuple[str, str]] = Counter()
    for owner, key, amount in credits:
        deposited[owner] = deposited.get(owner, 0) + amount
        seen_keys[(owner, key)] += 1
    out["deposits_lost"] = sum(1 for o, keys in books.deposits.items() for k in keys if seen_keys[(o, k)] == 0)
    out["deposits_doubled"] = sum(n - 1 for n in seen_keys.values() if n > 1)
    out["deposit_amount_mismatch_cents"] = sum(
        abs(deposited.get(o, 0) - sum(keys.values())) for o, keys in books.deposits.items()
    )
    out.update(_stripe(deposits, reversals, books))
    # What refunds and disputes took from each balance (the rest is owed, taken from later credits).
    taken: Counter[str] = Counter()
    for owner, _, _, _, cents in reversals:
        taken[owner] += int(cents)
    balances = {w[0]: w[1] for w in wallets}
    out["balance_mismatch_cents"] = sum(
        abs(balances.get(o, 0) - (sum(keys.values()) - int(totals.get(o, (0, 0, 0))[0]) - taken[o]))
        for o, keys in books.deposits.items()
    )
    out["uncollected_charges"] = sum(int(t[1]) for t in totals.values())
    out["settled_charges"] = sum(int(t[2]) for t in totals.values())
    # Oldest-first settlement with one price per owner: a debt outstanding means the balance cannot pay it.
    out["unsettled_while_funded"] = sum(
        1 for o, price in books.prices.items() if int(totals.get(o, (0, 0, 0))[1]) > 0 and balances.get(o, 0) >= price
    )
    return out


def _stripe(deposits: list[tuple[Any, ...]], reversals: list[tuple[Any, ...]], books: Books) -> dict[str, Any]:
    """Billing's deposits against what Stripe saw: each paid one credited exactly once, for its amount, and
    nothing else credited; each cent Stripe took back recorded once, and the ledger took what was not owed."""
    paid = books.stripe_paid
    out: dict[str, Any] = {"stripe_deposits_paid": len(paid), "stripe_deposits_abandoned": len(books.abandoned)}
    rows = {r[0]: r for r in deposits}
    out["stripe_paid_not_credited"] = sum(
        1 for dep in paid if dep not in rows or rows[dep][2] != "succeeded" or rows[dep][5] == 0 or rows[dep][6] == 0
    )
    out["stripe_credited_twice"] = sum(max(int(r[5]) - 1, 0) + max(int(r[6]) - 1, 0) for r in deposits)
    out["stripe_credited_unpaid"] = sum(
        1 for r in deposits if r[0] not in paid and (r[2] == "succeeded" or r[5] or r[6])
    )
    out["stripe_credit_amount_mismatch_cents"] = sum(
        abs(int(rows[dep][7]) - cents) + abs(int(rows[dep][3]) - cents) for dep, cents in paid.items() if dep in rows
    )
    amounts = {r[4]: int(r[3]) for r in deposits if r[4]}
    recorded: Counter[str] = Counter()
    for _, intent, amount, owed, taken in reversals:
        recorded[intent] += int(amount)
        out["stripe_reversal_mismatch_cents"] = out.get("stripe_reversal_mismatch_cents", 0) + abs(
            int(amount) - int(owed) - int(taken)
        )
    out["stripe_reversal_mismatch_cents"] = out.get("stripe_reversal_mismatch_cents", 0) + sum(
        abs(recorded[intent] - min(cents, amounts.get(intent, 0)))
        for intent, cents in {**dict.fromkeys(recorded, 0), **books.stripe_taken_back}.items()
    )
    out["stripe_reversals"] = len(reversals)
    return out


def unhandled_errors(logs: Path) -> dict[str, int]:
    """Per service, the requests that ended in an unhandled exception (a 500 the code did not mean to give):
    the HTTP shell's "unhandled error" and the request/reply wrapper's "request handler … failed"."""
    found: Counter[str] = Counter()
    for path in logs.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            msg = str(record.get("msg", "")) if isinstance(record, dict) else ""
            if msg == "unhandled error" or (msg.startswith("request handler ") and msg.endswith(" failed")):
                found[path.name.split("-")[0]] += 1
    return dict(found)


def reconcile(database_url: str) -> tuple[int, str]:
    """Billing's own `python -m agentry_billing.reconcile`: its exit code and summary line."""
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "agentry_billing.reconcile"], env=env, capture_output=True, text=True, timeout=120
    )
    lines = (done.stdout or done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


FAILURE_KEYS = (
    "lost",
    "double_charges",
    "ledger_drift_cents",
    "missing_charges",
    "wrong_charges",
    "charges_without_money_moved",
    "negative_wallets",
    "answer_mismatch",
    "deposits_lost",
    "deposits_doubled",
    "deposit_amount_mismatch_cents",
    "balance_mismatch_cents",
    "unsettled_while_funded",
    "stripe_paid_not_credited",
    "stripe_credited_twice",
    "stripe_credited_unpaid",
    "stripe_credit_amount_mismatch_cents",
    "stripe_reversal_mismatch_cents",
    "history_missing",
)


def violations(result: Mapping[str, Any]) -> list[str]:
    """The names of the invariants the result breaks (empty: all hold)."""
    broken = [k for k in FAILURE_KEYS if result.get(k)]
    if result.get("stripe_errors"):  # billing sent Stripe a request the stripe library's types do not allow
        broken.append("stripe_errors")
    if result.get("reconcile_exit", 0) != 0:
        broken.append("reconcile_exit")
    if result.get("unhandled_errors"):
        broken.append("unhandled_errors")
    if result.get("quiescent_after_s", 0) < 0:
        broken.append("quiescent_after_s")
    return broken


def summarize(result: dict[str, Any]) -> str:
    lines = ["", "chaos events:", *(f"  {e}" for e in result["chaos"]), "responses (kind status: count):"]
    lines += [f"  {k:<22} {v}" for k, v in result["responses"].items()]
    if result["client_errors"]:
        lines.append(f"  client errors: {result['client_errors']}")
    lines.append(f"runs by status: {result['runs_by_status']}  (redelivered: {result['redelivered_runs']})")
    hooks = result["webhook_answers"]
    lines.append(f"stripe: {result['stripe_deposits_paid']} deposits paid, {result['stripe_deposits_abandoned']} "
                 f"abandoned, {result['stripe_reversals']} refunds/disputes; {result['webhook_events']} webhook "
                 f"events, posted {sum(hooks.values())} times (answers: {hooks})")  # fmt: skip
    lines.append(f"reconcile: {result['reconcile']} (exit {result['reconcile_exit']})")
    lines.append(f"unhandled errors (500s nobody meant) by service: {result['unhandled_errors'] or 'none'}")
    width = max(len(k) for k in FAILURE_KEYS)
    lines.append("invariants (0 = holds):")
    lines += [f"  {k:<{width}} {result.get(k)}" for k in FAILURE_KEYS]
    lines.append(f"accepted {result['accepted']}, uncollected charges {result['uncollected_charges']}, "
                 f"settled {result['settled_charges']}, quiescent after {result['quiescent_after_s']}s")  # fmt: skip
    return "\n".join(lines)
