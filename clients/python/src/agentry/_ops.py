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
def regenerate_key(endpoint_id: str) -> Call[str]:
    return Call("POST", f"/api/agent-endpoints/{_q(endpoint_id)}/regenerate-key", lambda b: str(b["api_key"]))


@route("POST", "/api/agent-endpoints/{endpoint_id}/test")
def test_endpoint(endpoint_id: str, input: str | dict[str, Any]) -> Call[m.RunResult]:
    path = f"/api/agent-endpoints/{_q(endpoint_id)}/test"
    return Call("POST", path, m.RunResult.model_validate, json={"input": input})


@route("GET", "/api/agent-endpoints/{endpoint_id}/runs")
def list_runs(endpoint_id: str, limit: int = 20, cursor: str | None = None) -> Call[m.RunPage]:
    params = _fields({"limit": limit, "cursor": cursor})
    return Call("GET", f"/api/agent-endpoints/{_q(endpoint_id)}/runs", m.RunPage.model_validate, params=params)


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


@route("POST", "/api/balance/deposit")
def deposit(amount_cents: int, idempotency_key: str | None = None) -> Call[m.Deposited]:
    # A fresh key per call unless the caller retries with its own: a retry with the same key never pays twice.
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    body = {"amount_cents": amount_cents}
    return Call("POST", "/api/balance/deposit", m.Deposited.model_validate, json=body, headers=headers)


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
