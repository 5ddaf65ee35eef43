"""The CLI's usage, wallet and webhook commands."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from . import _cli_support as ui
from ._cli_support import Json, api_errors, app, owner, show
from .models import Delivery, Deposited

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
    query = {"granularity": granularity, "group_by": by or "none", "since": since, "until": until}
    with api_errors(), owner() as api:
        if as_csv:  # the server's own CSV (`format=csv`), byte for byte
            sys.stdout.write(api.usage_csv(**query))
            return
        report = api.usage(**query)
    buckets = [b.model_dump(mode="json") for b in report.buckets]
    if as_json:
        ui.print_json(report)
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


webhooks = typer.Typer(help="Webhooks: events POSTed to your URL, signed (default: list them).")
app.add_typer(webhooks, name="webhooks")
HOOK_COLUMNS = ["id", "url", "events", "enabled", "description", "created_at"]
DELIVERY_COLUMNS = ["id", "event_type", "status", "attempts", "last_status", "next_attempt_at", "created_at"]


def _hooks_list(as_json: bool) -> None:
    with api_errors(), owner() as api:
        show(api.list_webhooks(), as_json, HOOK_COLUMNS)


@webhooks.callback(invoke_without_command=True)
def webhooks_default(ctx: typer.Context, as_json: Json = False) -> None:
    if ctx.invoked_subcommand is None:
        _hooks_list(as_json)


@webhooks.command("list")
def webhooks_list(as_json: Json = False) -> None:
    """Your webhooks."""
    _hooks_list(as_json)


@webhooks.command("create")
def webhooks_create(
    url: str,
    event: Annotated[list[str], typer.Option("--event", help="An event type (run.succeeded, …); repeat for more.")],
    description: Annotated[str | None, typer.Option("--description")] = None,
    as_json: Json = False,
) -> None:
    """Subscribe a URL to event types; its signing secret is shown once."""
    with api_errors(), owner() as api:
        created = api.create_webhook(url, event, description)
    if as_json:
        ui.print_json(created)
        return
    show([created.webhook], False, HOOK_COLUMNS)
    ui.out.print(f"signing secret (shown only now): [bold]{created.secret}[/bold]", highlight=False)


@webhooks.command("delete")
def webhooks_delete(webhook_id: str) -> None:
    with api_errors(), owner() as api:
        api.delete_webhook(webhook_id)


def _delivery_row(delivery: Delivery) -> dict[str, Any]:
    row = delivery.model_dump(mode="json")
    last = delivery.attempts[-1] if delivery.attempts else None
    row["last_status"] = (last.response_status or last.error) if last else None
    row["attempts"] = len(delivery.attempts)
    return row


@webhooks.command("deliveries")
def webhooks_deliveries(
    webhook_id: str, limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20, as_json: Json = False
) -> None:
    """A webhook's deliveries with their attempts, newest first."""
    with api_errors(), owner() as api:
        page = api.list_deliveries(webhook_id, limit)
    show(page.deliveries if as_json else [_delivery_row(d) for d in page.deliveries], as_json, DELIVERY_COLUMNS)


@webhooks.command("retry")
def webhooks_retry(webhook_id: str, delivery_id: str, as_json: Json = False) -> None:
    """Send a delivery again now."""
    with api_errors(), owner() as api:
        delivery = api.retry_delivery(webhook_id, delivery_id)
    show(delivery if as_json else _delivery_row(delivery), as_json, DELIVERY_COLUMNS)


@webhooks.command("test")
def webhooks_test(webhook_id: str, as_json: Json = False) -> None:
    """Send a `webhook.test` event to the webhook."""
    with api_errors(), owner() as api:
        delivery = api.test_webhook(webhook_id)
    show(delivery if as_json else _delivery_row(delivery), as_json, DELIVERY_COLUMNS)


@app.command()
def deposits(as_json: Json = False) -> None:
    """Deposits through the payment provider, with their status."""
    with api_errors(), owner() as api:
        found = api.deposits()
    show(found, as_json, ["id", "status", "amount_cents", "currency", "source", "checkout_url", "created_at"])
