"""`python -m agentry_billing.reconcile` (`make reconcile`): check that every wallet's ledger adds up.

Prints one line per wallet that drifts (every wallet with `--all`) and a summary; exits 1 on any drift,
2 when there is no database to check. Reads one consistent snapshot, so it is safe on a live system.
Uses DATABASE_URL, else the embedded PostgreSQL of `make run` under `.data` (started for the check if needed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from agentry_common.db import async_url

from .audit import WalletCheck, check_wallets

EMBEDDED_PG_PORT = 55432  # the port `make run` gives its PostgreSQL


async def reconcile(database_url: str, owners: Sequence[str] | None = None) -> list[WalletCheck]:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with conn.begin():
                return await check_wallets(conn, owners)
    finally:
        await engine.dispose()


def report(checks: Sequence[WalletCheck], show_all: bool = False) -> str:
    drifting = [c for c in checks if c.problems]
    lines = []
    shown = checks if show_all else drifting
    if shown:
        lines.append(f"{'owner_id':<40} {'balance':>12} {'ledger':>12} {'drift':>10}  problems")
        for c in shown:
            problems = "; ".join(c.problems) or "ok"
            lines.append(
                f"{c.owner_id:<40} {c.balance_cents:>12} {c.ledger_cents:>12} {c.drift_cents:>+10}  {problems}"
            )
    verdict = f"{len(drifting)} drifting" if drifting else "no drift"
    lines.append(f"reconcile: {len(checks)} wallets checked, {verdict}")
    return "\n".join(lines)


def _embedded_url(data: Path) -> tuple[str, object | None]:
    try:  # development only: service images carry no embedded PostgreSQL (agentry-dev is not installed there)
        from agentry_dev.servers import Postgres
    except ImportError:
        raise SystemExit(
            "reconcile: DATABASE_URL is not set, and the embedded PostgreSQL of `make run` needs the development "
            "package agentry-dev (`make install`); set DATABASE_URL to check a deployed database"
        ) from None

    pg = Postgres(data / "pg", EMBEDDED_PG_PORT)
    if not (pg.data_dir / "PG_VERSION").exists():
        raise SystemExit(f"reconcile: DATABASE_URL is not set and there is no database under {data}/pg")
    if pg._running():
        return pg.url, None
    pg.start()
    return pg.url, pg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconcile", description=__doc__)
    parser.add_argument("--all", action="store_true", help="print every wallet, not only drifting ones")
    parser.add_argument("--owner", action="append", help="check only this owner's wallet (repeatable)")
    parser.add_argument("--data", type=Path, default=Path(".data"), help="data folder of `make run`")
    args = parser.parse_args(argv)
    url, started = os.environ.get("DATABASE_URL"), None
    if not url:
        try:
            url, started = _embedded_url(args.data)
        except SystemExit as err:
            print(err, file=sys.stderr)
            return 2
    try:
        checks = asyncio.run(reconcile(url, args.owner))
    finally:
        if started is not None:
            started.stop()  # type: ignore[attr-defined]
    print(report(checks, args.all))
    return 1 if any(c.problems for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
