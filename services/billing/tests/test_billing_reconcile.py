"""`python -m agentry_billing.reconcile` (`make reconcile`): silent and 0 when the books add up, loud and 1
when any wallet drifts from its ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text


def reconcile(database_url: str | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "agentry_billing.reconcile", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
async def tampered(billing_engine, new_owner, fund):
    """A wallet whose balance an out-of-band write raised by 3 cents, bypassing the ledger's triggers and
    foreign keys (replica mode); restored afterwards so the shared database reconciles again."""
    owner = new_owner()
    await fund(owner, 100)

    async def shift(cents: int) -> None:
        async with billing_engine.connect() as conn, conn.begin():
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    "UPDATE billing.wallets SET balance_cents = balance_cents + :c,"
                    " lifetime_deposited_cents = lifetime_deposited_cents + :c WHERE owner_id = :o"
                ),
                {"c": cents, "o": owner},
            )

    await shift(3)
    yield owner
    await shift(-3)


async def test_books_that_add_up_reconcile_with_exit_0(servers, new_owner, fund) -> None:
    owners = [new_owner(), new_owner()]
    for o in owners:
        await fund(o, 250)
    result = reconcile(servers.database_url, "--all", *(f"--owner={o}" for o in owners))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 wallets checked, no drift" in result.stdout
    assert all(o in result.stdout for o in owners)


async def test_a_wallet_that_drifts_from_its_ledger_is_reported_with_exit_1(servers, tampered, new_owner, fund) -> None:
    healthy = new_owner()
    await fund(healthy, 100)
    result = reconcile(servers.database_url, f"--owner={tampered}", f"--owner={healthy}")
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(tampered))
    assert "+3" in line and "balance 103 != ledger sum 100" in line
    assert healthy not in result.stdout
    assert "2 wallets checked, 1 drifting" in result.stdout


def test_without_a_database_reconcile_says_so_with_exit_2(tmp_path: Path) -> None:
    result = reconcile(None, f"--data={tmp_path}")
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr
