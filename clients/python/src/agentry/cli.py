"""`agentry`: the command line over the SDK. Tables for people, `--json` for scripts; exit 0 ok, 1 API error
(its message shown), 2 usage error. Settings: flags, else `AGENTRY_URL` / `AGENTRY_TOKEN` /
`AGENTRY_API_KEY`, else what `agentry login` stored in ~/.config/agentry/config.json (mode 600)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from . import _cli_support as ui
from . import _cli_wallet  # noqa: F401  (registers usage, wallet and webhook commands)
from ._cli_support import InputArg, Json, Key, Set, State, api_errors, app, client, owner, show
from .client import Client


@app.command()
def login(
    url: Annotated[str | None, typer.Option("--url", help="The gateway.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Your JWT (asked for when not given).")] = None,
) -> None:
    """Check a token against the gateway and keep it (with the URL) for the next commands."""
    url = url or State.url or ui.load_config().get("url") or "http://127.0.0.1:8080"
    token = token or State.token or typer.prompt("Token", hide_input=True)
    with api_errors(), Client(url, token=token) as api:
        api.list_workspaces()
    path = ui.save_config({"url": url, "token": token})
    ui.err.print(f"signed in to {url}; saved in {path}", highlight=False)


# --- workspaces and MCP servers ---

workspaces = typer.Typer(help="Workspaces (default: list them).", no_args_is_help=False)
app.add_typer(workspaces, name="workspaces")
WS_COLUMNS = ["id", "name", "created_at"]


@workspaces.callback(invoke_without_command=True)
def workspaces_list(ctx: typer.Context, as_json: Json = False) -> None:
    if ctx.invoked_subcommand is None:
        with api_errors(), owner() as api:
            show(api.list_workspaces(), as_json, WS_COLUMNS)


@workspaces.command("create")
def workspaces_create(name: str, as_json: Json = False) -> None:
    with api_errors(), owner() as api:
        show(api.create_workspace(name), as_json, WS_COLUMNS)


@workspaces.command("delete")
def workspaces_delete(workspace_id: str) -> None:
    with api_errors(), owner() as api:
        api.delete_workspace(workspace_id)


servers = typer.Typer(help="MCP servers of a workspace.", no_args_is_help=True)
app.add_typer(servers, name="servers")
SRV_COLUMNS = ["id", "slug", "name", "url", "header_names"]


@servers.command("list")
def servers_list(workspace_id: str, as_json: Json = False) -> None:
    with api_errors(), owner() as api:
        show(api.list_servers(workspace_id), as_json, SRV_COLUMNS)


@servers.command("add")
def servers_add(
    workspace_id: str,
    name: str,
    url: str,
    header: Annotated[list[str] | None, typer.Option("--header", help="name=value, sent on every call.")] = None,
    as_json: Json = False,
) -> None:
    headers = {k: str(v) for k, v in ui.pairs(header, "--header").items()} or None
    with api_errors(), owner() as api:
        show(api.create_server(workspace_id, name, url, headers), as_json, SRV_COLUMNS)


@servers.command("tools")
def servers_tools(workspace_id: str, server_id: str, as_json: Json = False) -> None:
    """The tools the server offers now (asked live)."""
    with api_errors(), owner() as api:
        show(api.list_server_tools(workspace_id, server_id), as_json, ["llm_name", "description"])


@servers.command("delete")
def servers_delete(workspace_id: str, server_id: str) -> None:
    with api_errors(), owner() as api:
        api.delete_server(workspace_id, server_id)


# --- endpoints and keys ---

endpoints = typer.Typer(help="Agent endpoints (default: list them).")
app.add_typer(endpoints, name="endpoints")
EP_COLUMNS = ["id", "slug", "name", "llm_provider", "llm_model", "price_per_run_cents", "status"]


@endpoints.callback(invoke_without_command=True)
def endpoints_list(
    ctx: typer.Context,
    workspace: Annotated[str | None, typer.Option("--workspace", help="Only this workspace's.")] = None,
    as_json: Json = False,
) -> None:
    if ctx.invoked_subcommand is None:
        with api_errors(), owner() as api:
            show(api.list_endpoints(workspace), as_json, EP_COLUMNS)


@endpoints.command("show")
def endpoints_show(endpoint_id: str, as_json: Json = False) -> None:
    with api_errors(), owner() as api:
        show(api.get_endpoint(endpoint_id), as_json, [])


@endpoints.command("create")
def endpoints_create(
    workspace: Annotated[str, typer.Option("--workspace", help="Its workspace (ws_…).")],
    name: Annotated[str, typer.Option("--name")],
    prompt: Annotated[str, typer.Option("--prompt", help="The system prompt.")],
    provider: Annotated[str | None, typer.Option("--provider", help="openai, anthropic, …, mock")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    price: Annotated[int | None, typer.Option("--price", help="Per-run price in cents.")] = None,
    streaming: Annotated[bool, typer.Option("--streaming", help="Answer runs as SSE.")] = False,
    fields: Set = None,
    as_json: Json = False,
) -> None:
    """Create an endpoint; its API key is shown once."""
    given: dict[str, Any] = {"llm_provider": provider, "llm_model": model, "price_per_run_cents": price}
    extra = {k: v for k, v in given.items() if v is not None} | ({"enable_streaming": True} if streaming else {})
    with api_errors(), owner() as api:
        created = api.create_endpoint(workspace, name, prompt, **extra, **ui.pairs(fields, "--set"))
    if as_json:
        ui.print_json(created)
        return
    show(created.endpoint, False, EP_COLUMNS)
    ui.out.print(f"API key (shown only now): [bold]{created.api_key}[/bold]", highlight=False)


@endpoints.command("update")
def endpoints_update(endpoint_id: str, fields: Set = None, as_json: Json = False) -> None:
    """Change fields: `--set temperature=0.5 --set enable_streaming=true`."""
    changes = ui.pairs(fields, "--set")
    if not changes:
        raise ui.usage_error("nothing to change: give --set name=value")
    with api_errors(), owner() as api:
        show(api.update_endpoint(endpoint_id, **changes), as_json, EP_COLUMNS)


@endpoints.command("delete")
def endpoints_delete(endpoint_id: str) -> None:
    with api_errors(), owner() as api:
        api.delete_endpoint(endpoint_id)


@endpoints.command("test")
def endpoints_test(endpoint_id: str, input: InputArg = None, as_json: Json = False) -> None:
    """A run as the owner: no key, never charged."""
    value = ui.read_input(input)
    with api_errors(), owner() as api:
        result = api.test_endpoint(endpoint_id, value)
    _print_result(result.model_dump(mode="json"), as_json)


keys = typer.Typer(help="An endpoint's caller keys: one per customer or app.", no_args_is_help=True)
app.add_typer(keys, name="keys")
KEY_COLUMNS = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "rate_limit_per_minute",
               "spend_cap_cents", "spend_cap_period", "spent_cents", "revoked_at"]  # fmt: skip
Expires = Annotated[str | None, typer.Option("--expires", help="ISO 8601; the key fails after it.")]
RateLimit = Annotated[int | None, typer.Option("--rate-limit", min=1, help="Runs per minute for this key.")]
SpendCap = Annotated[int | None, typer.Option("--spend-cap", min=0, help="Cents of run prices per period.")]
CapPeriod = Annotated[str | None, typer.Option("--cap-period", help="day, month (default) or total.")]


def _key_fields(expires: str | None, rate_limit: int | None, cap: int | None, period: str | None) -> dict[str, Any]:
    if period not in (None, "day", "month", "total"):
        raise ui.usage_error("--cap-period takes day, month or total")
    given = {"expires_at": expires, "rate_limit_per_minute": rate_limit, "spend_cap_cents": cap,
             "spend_cap_period": period}  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


@keys.command("list")
def keys_list(endpoint_id: str, as_json: Json = False) -> None:
    """The endpoint's keys, revoked ones included (with `revoked_at`)."""
    with api_errors(), owner() as api:
        show(api.list_keys(endpoint_id), as_json, KEY_COLUMNS)


@keys.command("create")
def keys_create(
    endpoint_id: str,
    name: Annotated[str, typer.Option("--name", help="Who the key is for.")],
    expires: Expires = None,
    rate_limit: RateLimit = None,
    spend_cap: SpendCap = None,
    cap_period: CapPeriod = None,
    as_json: Json = False,
) -> None:
    """Issue a new caller key; the key is shown once."""
    fields = _key_fields(expires, rate_limit, spend_cap, cap_period)
    with api_errors(), owner() as api:
        created = api.create_key(endpoint_id, name, **fields)
    if as_json:
        ui.print_json(created)
        return
    show(created.key, False, KEY_COLUMNS)
    ui.out.print(f"API key (shown only now): [bold]{created.api_key}[/bold]", highlight=False)


@keys.command("update")
def keys_update(
    endpoint_id: str,
    key_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    expires: Expires = None,
    rate_limit: RateLimit = None,
    spend_cap: SpendCap = None,
    cap_period: CapPeriod = None,
    as_json: Json = False,
) -> None:
    """Change a key's name, expiry, rate limit or spend cap (only what is given)."""
    fields = _key_fields(expires, rate_limit, spend_cap, cap_period) | ({"name": name} if name else {})
    if not fields:
        raise ui.usage_error("nothing to change: give --name, --expires, --rate-limit, --spend-cap or --cap-period")
    with api_errors(), owner() as api:
        show(api.update_key(endpoint_id, key_id, **fields), as_json, KEY_COLUMNS)


@keys.command("revoke")
def keys_revoke(endpoint_id: str, key_id: str) -> None:
    """Revoke a key: it fails everywhere within a second, and stays listed."""
    with api_errors(), owner() as api:
        api.revoke_key(endpoint_id, key_id)


@keys.command("regenerate")
def keys_regenerate(
    endpoint_id: str,
    grace: Annotated[
        int | None, typer.Option("--grace", min=0, max=86400, help="Seconds the old key still works.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Replace the endpoint's `default` key; the old one stops working at once (or after --grace seconds)."""
    with api_errors(), owner() as api:
        key = api.regenerate_key(endpoint_id, grace_seconds=grace)
    ui.print_json({"api_key": key}) if as_json else ui.out.print(key, highlight=False)


# --- runs ---


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        ui.print_json(result)
        return
    output = result.get("output")
    sys.stdout.write((output if isinstance(output, str) else ui.cell(output)) + "\n")
    usage = result.get("usage") or {}
    ui.err.print(
        f"[dim]{result.get('run_id')} · {usage.get('tokens_input')} in / {usage.get('tokens_output')} out · "
        f"{usage.get('latency_ms')} ms · {usage.get('iterations')} LLM calls[/dim]",
        highlight=False,
    )


@app.command()
def run(
    slug: str,
    input: InputArg = None,
    stream: Annotated[bool, typer.Option("--stream", help="Show the run's progress as it happens.")] = False,
    key: Key = None,
    as_json: Json = False,
) -> None:
    """Run an endpoint as a caller, with its API key (--key or AGENTRY_API_KEY)."""
    value = ui.read_input(input)
    with api_errors(), client(State.url, State.token, need_token=False) as api:
        if not stream:
            _print_result(api.run(slug, value, api_key=key).model_dump(mode="json"), as_json)
            return
        for event in api.stream(slug, value, api_key=key):
            if as_json:
                sys.stdout.write(json.dumps({"event": event.event, "data": event.data}) + "\n")
            elif event.event == "done":
                _print_result(event.data, False)
            else:
                detail = event.data.get("name") or event.data.get("iteration") or ""
                ui.err.print(f"[cyan]{event.event}[/cyan] {detail}", highlight=False)


RUN_COLUMNS = [
    "id",
    "status",
    "key_id",
    "tokens_input",
    "tokens_output",
    "latency_ms",
    "iterations",
    "charge",
    "created_at",
]


@app.command()
def runs(
    endpoint_id: str,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new runs.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between polls.")] = 2.0,
    for_s: Annotated[float, typer.Option("--for", min=0, help="Stop following after this long (0: never).")] = 0,
    key_id: Annotated[str | None, typer.Option("--key-id", help="Only the runs made with this key (key_…).")] = None,
    as_json: Json = False,
) -> None:
    """An endpoint's run history, newest first; `--follow` prints new runs as they come (one line each)."""
    with api_errors(), owner() as api:
        page = api.list_runs(endpoint_id, limit, key_id=key_id)
        if not follow:
            show(page.runs, as_json, RUN_COLUMNS)
            return
        seen: set[str] = set()
        ends = time.monotonic() + for_s if for_s else None
        try:
            while True:
                for r in reversed(page.runs):
                    if r.id not in seen:
                        seen.add(r.id)
                        data = r.model_dump(mode="json")
                        line = json.dumps(data) if as_json else "  ".join(ui.cell(data[c]) for c in RUN_COLUMNS)
                        sys.stdout.write(line + "\n")
                sys.stdout.flush()
                if ends is not None and time.monotonic() >= ends:
                    return
                time.sleep(interval)
                page = api.list_runs(endpoint_id, 100, key_id=key_id)
        except KeyboardInterrupt:
            return


def main() -> None:
    app()
