"""The CLI's usage, wallet and webhook commands."""

from __future__ import annotations

import csv
import sys
from typing import Annotated

import typer

from . import _cli_support as ui
from ._cli_support import Json, api_errors, app, owner, show
from .models import Deposited

# --- usage, wallet, webhooks ---

USAGE_FIELDS = ["start", "endpoint_id", "key_id", "runs", "succeeded", "failed", "tokens_input", "tokens_output",
                "cost_cents", "charged_cents", "uncollected_cents", "latency_ms_p50", "latency_ms_p95"]  # fmt: skip


@app.command()
def usage(
    by: Annotated[str | None, typer.Option("--by", help="endpoint or key")] = None,
    granularity: Annotated[str, typer.Option("--granularity", help="hour, day or month")] = "day",
    since: Annotated[str | None, typer.Option("--from", help="ISO 8601 (default: 30 days ago)")] = None,
    until: Annotated[str | None, typer.Option("--to", help="ISO 8601 (default: now)")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV rows, for spreadsheets.")] = False,
    as_json: Json = False,
) -> None:
    """Runs, tokens and money over time (`GET /api/usage`), with a chart of runs."""
    if by not in (None, "endpoint", "key"):
        raise ui.usage_error("--by takes endpoint or key")
    params = {"granularity": granularity, "group_by": by or "none", "from": since, "to": until}
    with api_errors(), owner() as api:
        report = api.request("GET", "/api/usage", params={k: v for k, v in params.items() if v is not None})
    buckets = report.get("buckets", [])
    if as_json:
        ui.print_json(report)
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, USAGE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(buckets)
    else:
        columns = [c for c in USAGE_FIELDS if c not in ("endpoint_id", "key_id") or c == f"{by}_id"]
        ui.table(buckets, columns[:9], title="usage")
        peak = max((int(b.get("runs", 0)) for b in buckets), default=0) or 1
        for b in buckets:
            label = f"{str(b.get('start', ''))[:16]} {b.get(f'{by}_id', '') if by else ''}".strip()
            ui.out.print(f"{label:<40} {'█' * round(30 * int(b.get('runs', 0)) / peak)} {b.get('runs', 0)}")


@app.command()
def balance(as_json: Json = False) -> None:
    """The wallet."""
    with api_errors(), owner() as api:
        wallet = api.balance()
    if as_json:
        ui.print_json(wallet)
        return
    ui.out.print(f"[bold]{ui.money(wallet.balance_cents, wallet.currency)}[/bold]", highlight=False)
    ui.out.print(
        f"deposited {ui.money(wallet.lifetime_deposited_cents, wallet.currency)} · "
        f"spent {ui.money(wallet.lifetime_spent_cents, wallet.currency)} · "
        f"uncollected {ui.money(wallet.uncollected_cents, wallet.currency)}",
        highlight=False,
    )


@app.command()
def deposit(
    amount: Annotated[float, typer.Argument(help="In the wallet's currency: 5 = 5.00 (500 cents).")],
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Reuse to retry safely.")] = None,
    as_json: Json = False,
) -> None:
    """Add money to the wallet."""
    with api_errors(), owner() as api:
        done = api.deposit(round(amount * 100), idempotency_key=idempotency_key)
    if as_json:
        ui.print_json(done)
    elif isinstance(done, Deposited):
        ui.out.print(f"balance {ui.money(done.balance_cents)}", highlight=False)
    else:  # Stripe mode: credited once paid
        ui.out.print(f"pay at {done.deposit.checkout_url} ({done.deposit.id}, pending)", highlight=False)


@app.command()
def transactions(limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20, as_json: Json = False) -> None:
    """The wallet's ledger, newest first."""
    with api_errors(), owner() as api:
        page = api.transactions(limit)
    show(page.transactions, as_json, ["id", "kind", "amount_cents", "run_id", "status", "created_at"])


webhooks = typer.Typer(help="Webhooks (`/api/webhooks` per the contract; default: list them).")
app.add_typer(webhooks, name="webhooks")
HOOK_COLUMNS = ["id", "url", "events", "enabled", "created_at"]


@webhooks.callback(invoke_without_command=True)
def webhooks_list(ctx: typer.Context, as_json: Json = False) -> None:
    if ctx.invoked_subcommand is None:
        with api_errors(), owner() as api:
            show(api.request("GET", "/api/webhooks")["webhooks"], as_json, HOOK_COLUMNS)


@webhooks.command("create")
def webhooks_create(
    url: str,
    event: Annotated[list[str], typer.Option("--event", help="An event type; repeat for more.")],
    as_json: Json = False,
) -> None:
    with api_errors(), owner() as api:
        created = api.request("POST", "/api/webhooks", json={"url": url, "events": event})
    if as_json:
        ui.print_json(created)
        return
    show([created["webhook"]], False, HOOK_COLUMNS)
    ui.out.print(f"signing secret (shown only now): [bold]{created['secret']}[/bold]", highlight=False)


@webhooks.command("delete")
def webhooks_delete(webhook_id: str) -> None:
    with api_errors(), owner() as api:
        api.request("DELETE", f"/api/webhooks/{webhook_id}")


@webhooks.command("deliveries")
def webhooks_deliveries(webhook_id: str, as_json: Json = False) -> None:
    with api_errors(), owner() as api:
        found = api.request("GET", f"/api/webhooks/{webhook_id}/deliveries")["deliveries"]
    show(found, as_json, ["id", "event_type", "status", "next_attempt_at", "created_at"])
