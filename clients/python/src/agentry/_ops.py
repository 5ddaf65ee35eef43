"""Every API call once, as data: method, path, body and how to read the answer. `Client` and `AsyncClient`
only send them. `@route` records which (method, path) of the API each operation covers, so a test can compare
the table with the gateway's OpenAPI document: adding a route to the SDK is one function here plus a two-line
method on each client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from . import models as m

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# (METHOD, path template as in the OpenAPI document) → the operation (and client method) serving it.
COVERED: dict[tuple[str, str], str] = {}


def route(method: str, path: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        COVERED[(method, path)] = fn.__name__
        return fn

    return register


Auth = Literal["token", "key", "key_or_token"]


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    auth: Auth = "token"
    api_key: str | None = None  # this call's key, else the client's
    text: bool = False  # the answer is read as text (CSV), not JSON


def _q(value: str) -> str:
    """A path segment, escaped: an id never changes which route is called."""
    return quote(value, safe="")


def _nothing(_: Any) -> None:
    return None


def _raw(body: Any) -> Any:
    return body


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# --- workspaces and MCP servers ---


@route("POST", "/api/workspaces")
def create_workspace(name: str) -> Call[m.Workspace]:
    return Call("POST", "/api/workspaces", lambda b: m.Workspace.model_validate(b["workspace"]), json={"name": name})


@route("GET", "/api/workspaces")
def list_workspaces() -> Call[list[m.Workspace]]:
    return Call("GET", "/api/workspaces", lambda b: [m.Workspace.model_validate(w) for w in b["workspaces"]])


@route("GET", "/api/workspaces/{workspace_id}")
def get_workspace(workspace_id: str) -> Call[m.Workspace]:
    return Call("GET", f"/api/workspaces/{_q(workspace_id)}", lambda b: m.Workspace.model_validate(b["workspace"]))


@route("DELETE", "/api/workspaces/{workspace_id}")
def delete_workspace(workspace_id: str) -> Call[None]:
    return Call("DELETE", f"/api/workspaces/{_q(workspace_id)}", _nothing)


@route("POST", "/api/workspaces/{workspace_id}/servers")
def create_server(workspace_id: str, name: str, url: str, headers: dict[str, str] | None = None) -> Call[m.Server]:
    body = _fields({"name": name, "url": url, "headers": headers})
    path = f"/api/workspaces/{_q(workspace_id)}/servers"
    return Call("POST", path, lambda b: m.Server.model_validate(b["server"]), json=body)


@route("GET", "/api/workspaces/{workspace_id}/servers")
def list_servers(workspace_id: str) -> Call[list[m.Server]]:
    path = f"/api/workspaces/{_q(workspace_id)}/servers"
    return Call("GET", path, lambda b: [m.Server.model_validate(s) for s in b["servers"]])


@route("GET", "/api/workspaces/{workspace_id}/servers/{server_id}")
def get_server(workspace_id: str, server_id: str) -> Call[m.Server]:
    path = f"/api/workspaces/{_q(workspace_id)}/servers/{_q(server_id)}"
    return Call("GET", path, lambda b: m.Server.model_validate(b["server"]))


@route("DELETE", "/api/workspaces/{workspace_id}/servers/{server_id}")
def delete_server(workspace_id: str, server_id: str) -> Call[None]:
    return Call("DELETE", f"/api/workspaces/{_q(workspace_id)}/servers/{_q(server_id)}", _nothing)


@route("GET", "/api/workspaces/{workspace_id}/servers/{server_id}/tools")
def list_server_tools(workspace_id: str, server_id: str) -> Call[list[m.ToolInfo]]:
    path = f"/api/workspaces/{_q(workspace_id)}/servers/{_q(server_id)}/tools"
    return Call("GET", path, lambda b: [m.ToolInfo.model_validate(t) for t in b["tools"]])


# --- endpoints ---


@route("POST", "/api/agent-endpoints")
def create_endpoint(workspace_id: str, name: str, system_prompt: str, **fields: Any) -> Call[m.EndpointCreated]:
    body = {"workspace_id": workspace_id, "name": name, "system_prompt": system_prompt, **fields}
    return Call("POST", "/api/agent-endpoints", m.EndpointCreated.model_validate, json=body)


@route("GET", "/api/agent-endpoints")
def list_endpoints(workspace_id: str | None = None) -> Call[list[m.Endpoint]]:
    params = _fields({"workspace_id": workspace_id})
    parse: Callable[[Any], list[m.Endpoint]] = lambda b: [m.Endpoint.model_validate(e) for e in b["endpoints"]]  # noqa: E731
    return Call("GET", "/api/agent-endpoints", parse, params=params)


@route("GET", "/api/agent-endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: str) -> Call[m.Endpoint]:
    return Call("GET", f"/api/agent-endpoints/{_q(endpoint_id)}", lambda b: m.Endpoint.model_validate(b["endpoint"]))


@route("PATCH", "/api/agent-endpoints/{endpoint_id}")
def update_endpoint(endpoint_id: str, **fields: Any) -> Call[m.Endpoint]:
    path = f"/api/agent-endpoints/{_q(endpoint_id)}"
    return Call("PATCH", path, lambda b: m.Endpoint.model_validate(b["endpoint"]), json=fields)


@route("DELETE", "/api/agent-endpoints/{endpoint_id}")
def delete_endpoint(endpoint_id: str) -> Call[None]:
    return Call("DELETE", f"/api/agent-endpoints/{_q(endpoint_id)}", _nothing)


@route("POST", "/api/agent-endpoints/{endpoint_id}/regenerate-key")
def regenerate_key(endpoint_id: str, grace_seconds: int | None = None) -> Call[str]:
    # Without grace the old default key fails at once; with it, it keeps working that long.
    body = None if grace_seconds is None else {"grace_seconds": grace_seconds}
    path = f"/api/agent-endpoints/{_q(endpoint_id)}/regenerate-key"
    return Call("POST", path, lambda b: str(b["api_key"]), json=body)


@route("POST", "/api/agent-endpoints/{endpoint_id}/test")
def test_endpoint(endpoint_id: str, input: str | dict[str, Any]) -> Call[m.RunResult]:
    path = f"/api/agent-endpoints/{_q(endpoint_id)}/test"
    return Call("POST", path, m.RunResult.model_validate, json={"input": input})


@route("GET", "/api/agent-endpoints/{endpoint_id}/runs")
def list_runs(
    endpoint_id: str, limit: int = 20, cursor: str | None = None, key_id: str | None = None
) -> Call[m.RunPage]:
    params = _fields({"limit": limit, "cursor": cursor, "key_id": key_id})
    return Call("GET", f"/api/agent-endpoints/{_q(endpoint_id)}/runs", m.RunPage.model_validate, params=params)


# --- caller keys ---


def _keys(endpoint_id: str, key_id: str | None = None) -> str:
    path = f"/api/agent-endpoints/{_q(endpoint_id)}/keys"
    return path if key_id is None else f"{path}/{_q(key_id)}"


def _key(body: Any) -> m.Key:
    return m.Key.model_validate(body["key"])


@route("POST", "/api/agent-endpoints/{endpoint_id}/keys")
def create_key(endpoint_id: str, name: str, **fields: Any) -> Call[m.KeyCreated]:
    """`fields`: expires_at, rate_limit_per_minute, spend_cap_cents, spend_cap_period."""
    return Call("POST", _keys(endpoint_id), m.KeyCreated.model_validate, json={"name": name, **_fields(fields)})


@route("GET", "/api/agent-endpoints/{endpoint_id}/keys")
def list_keys(endpoint_id: str) -> Call[list[m.Key]]:
    return Call("GET", _keys(endpoint_id), lambda b: [m.Key.model_validate(k) for k in b["keys"]])


@route("GET", "/api/agent-endpoints/{endpoint_id}/keys/{key_id}")
def get_key(endpoint_id: str, key_id: str) -> Call[m.Key]:
    return Call("GET", _keys(endpoint_id, key_id), _key)


@route("PATCH", "/api/agent-endpoints/{endpoint_id}/keys/{key_id}")
def update_key(endpoint_id: str, key_id: str, **fields: Any) -> Call[m.Key]:
    """Partial: only the given fields change; a None value clears that field (e.g. no expiry)."""
    return Call("PATCH", _keys(endpoint_id, key_id), _key, json=fields)


@route("DELETE", "/api/agent-endpoints/{endpoint_id}/keys/{key_id}")
def revoke_key(endpoint_id: str, key_id: str) -> Call[None]:
    return Call("DELETE", _keys(endpoint_id, key_id), _nothing)


# --- runs (with the endpoint's API key) ---


def _run_answer(body: Any) -> m.RunResult | m.RunAccepted:
    return m.RunAccepted.model_validate(body) if "status_url" in body else m.RunResult.model_validate(body)


@route("POST", "/api/run/{slug}")
def submit(slug: str, input: str | dict[str, Any], api_key: str | None = None) -> Call[m.RunResult | m.RunAccepted]:
    return Call("POST", f"/api/run/{_q(slug)}", _run_answer, json={"input": input}, auth="key", api_key=api_key)


@route("GET", "/api/runs/{run_id}")
def run_status(run_id: str, api_key: str | None = None) -> Call[m.RunStatus]:
    return Call("GET", f"/api/runs/{_q(run_id)}", m.RunStatus.model_validate, auth="key_or_token", api_key=api_key)


# --- wallet ---


@route("GET", "/api/balance")
def balance() -> Call[m.Balance]:
    return Call("GET", "/api/balance", m.Balance.model_validate)


def _deposit_answer(body: Any) -> m.Deposited | m.DepositStarted:
    # Stripe mode answers a pending deposit to pay at its checkout URL; manual mode credits at once.
    return m.DepositStarted.model_validate(body) if "deposit" in body else m.Deposited.model_validate(body)


@route("POST", "/api/balance/deposit")
def deposit(amount_cents: int, idempotency_key: str | None = None) -> Call[m.Deposited | m.DepositStarted]:
    # A fresh key per call unless the caller retries with its own: a retry with the same key never pays twice.
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    body = {"amount_cents": amount_cents}
    return Call("POST", "/api/balance/deposit", _deposit_answer, json=body, headers=headers)


@route("GET", "/api/balance/transactions")
def transactions(limit: int = 20, cursor: str | None = None) -> Call[m.TransactionPage]:
    params = _fields({"limit": limit, "cursor": cursor})
    return Call("GET", "/api/balance/transactions", m.TransactionPage.model_validate, params=params)


@route("POST", "/api/admin/wallets/{user_id}/credits")
def admin_credit(user_id: str, amount_cents: int, reason: str, idempotency_key: str | None = None) -> Call[m.Deposited]:
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    body = {"amount_cents": amount_cents, "reason": reason}
    path = f"/api/admin/wallets/{_q(user_id)}/credits"
    return Call("POST", path, m.Deposited.model_validate, json=body, headers=headers)


@route("GET", "/api/balance/deposits")
def deposits() -> Call[list[m.DepositRecord]]:
    return Call("GET", "/api/balance/deposits", lambda b: [m.DepositRecord.model_validate(d) for d in b["deposits"]])


@route("GET", "/api/balance/auto-recharge")
def auto_recharge() -> Call[m.AutoRecharge]:
    return Call("GET", "/api/balance/auto-recharge", m.AutoRecharge.model_validate)


@route("PUT", "/api/balance/auto-recharge")
def set_auto_recharge(enabled: bool, threshold_cents: int, amount_cents: int) -> Call[m.AutoRecharge]:
    body = {"enabled": enabled, "threshold_cents": threshold_cents, "amount_cents": amount_cents}
    return Call("PUT", "/api/balance/auto-recharge", m.AutoRecharge.model_validate, json=body)


@route("GET", "/api/balance/alerts")
def balance_alerts() -> Call[m.BalanceAlerts]:
    return Call("GET", "/api/balance/alerts", m.BalanceAlerts.model_validate)


@route("PUT", "/api/balance/alerts")
def set_balance_alerts(low_balance_cents: int | None) -> Call[m.BalanceAlerts]:
    body = {"low_balance_cents": low_balance_cents}
    return Call("PUT", "/api/balance/alerts", m.BalanceAlerts.model_validate, json=body)


# --- usage ---


def _usage_params(query: dict[str, Any]) -> dict[str, Any]:
    # `since`/`until` because `from` is a Python keyword; the API's names are `from`/`to`.
    renamed = {"from": query.pop("since", None), "to": query.pop("until", None), **query}
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in _fields(renamed).items()}


@route("GET", "/api/usage")
def usage(**query: Any) -> Call[m.UsageReport]:
    """`query`: since, until (ISO 8601 or datetime), granularity (hour|day|month), group_by (none|endpoint|key),
    endpoint_id, key_id."""
    return Call("GET", "/api/usage", m.UsageReport.model_validate, params=_usage_params(query))


def usage_csv(**query: Any) -> Call[str]:
    """The same rows as CSV, formatted by the server (`format=csv`); the same route as `usage`."""
    params = {**_usage_params(query), "format": "csv"}
    return Call("GET", "/api/usage", str, params=params, headers={"Accept": "text/csv"}, text=True)


# --- webhooks ---


def _hooks(webhook_id: str | None = None) -> str:
    return "/api/webhooks" if webhook_id is None else f"/api/webhooks/{_q(webhook_id)}"


def _hook(body: Any) -> m.Webhook:
    return m.Webhook.model_validate(body["webhook"])


def _delivery(body: Any) -> m.Delivery:
    return m.Delivery.model_validate(body["delivery"])


@route("POST", "/api/webhooks")
def create_webhook(url: str, events: list[str], description: str | None = None) -> Call[m.WebhookCreated]:
    body = _fields({"url": url, "events": events, "description": description})
    return Call("POST", "/api/webhooks", m.WebhookCreated.model_validate, json=body)


@route("GET", "/api/webhooks")
def list_webhooks() -> Call[list[m.Webhook]]:
    return Call("GET", "/api/webhooks", lambda b: [m.Webhook.model_validate(w) for w in b["webhooks"]])


@route("GET", "/api/webhooks/{webhook_id}")
def get_webhook(webhook_id: str) -> Call[m.Webhook]:
    return Call("GET", _hooks(webhook_id), _hook)


@route("PATCH", "/api/webhooks/{webhook_id}")
def update_webhook(webhook_id: str, **fields: Any) -> Call[m.Webhook]:
    """`fields`: url, events, description, enabled."""
    return Call("PATCH", _hooks(webhook_id), _hook, json=fields)


@route("DELETE", "/api/webhooks/{webhook_id}")
def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", _hooks(webhook_id), _nothing)


@route("POST", "/api/webhooks/{webhook_id}/test")
def test_webhook(webhook_id: str) -> Call[m.Delivery]:
    return Call("POST", f"{_hooks(webhook_id)}/test", _delivery)


@route("GET", "/api/webhooks/{webhook_id}/deliveries")
def list_deliveries(webhook_id: str, limit: int = 20, cursor: str | None = None) -> Call[m.DeliveryPage]:
    params = _fields({"limit": limit, "cursor": cursor})
    return Call("GET", f"{_hooks(webhook_id)}/deliveries", m.DeliveryPage.model_validate, params=params)


@route("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
def retry_delivery(webhook_id: str, delivery_id: str) -> Call[m.Delivery]:
    return Call("POST", f"{_hooks(webhook_id)}/deliveries/{_q(delivery_id)}/retry", _delivery)


# --- the OpenAI-compatible face (the official `openai` SDK is the full client for it) ---


@route("POST", "/v1/chat/completions")
def chat_completion(model: str, messages: list[dict[str, Any]], api_key: str | None = None) -> Call[dict[str, Any]]:
    body = {"model": model, "messages": messages}
    return Call("POST", "/v1/chat/completions", _raw, json=body, auth="key", api_key=api_key)


@route("GET", "/v1/models")
def list_models(api_key: str | None = None) -> Call[list[str]]:
    return Call("GET", "/v1/models", lambda b: [d["id"] for d in b["data"]], auth="key", api_key=api_key)


@route("GET", "/v1/models/{model}")
def get_model(model: str, api_key: str | None = None) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/models/{_q(model)}", _raw, auth="key", api_key=api_key)
