"""What `Client` and `AsyncClient` share: configuration, headers, reading answers into models or typed errors,
and server-sent events."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import httpx

from . import models as m
from ._ops import Call
from .errors import AgentryError, RunTimeoutError, UpstreamError, error_for

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8080"


class Settings:
    """`base_url`, `token` (an owner's JWT, for management) and `api_key` (an endpoint's `aek_…`, for runs);
    each defaults to `AGENTRY_URL`, `AGENTRY_TOKEN`, `AGENTRY_API_KEY`."""

    def __init__(self, base_url: str | None, token: str | None, api_key: str | None):
        self.base_url = (base_url or os.environ.get("AGENTRY_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("AGENTRY_TOKEN")
        self.api_key = api_key if api_key is not None else os.environ.get("AGENTRY_API_KEY")

    def headers(self, call: Call[Any]) -> dict[str, str]:
        key = call.api_key or self.api_key
        if call.auth == "token":
            secret = self.token
        elif call.auth == "key":
            secret = key
        else:
            secret = key or self.token
        auth = {"Authorization": f"Bearer {secret}"} if secret else {}
        return {**auth, **call.headers}


def read(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the typed error for it."""
    if response.status_code >= 400:
        raise error_for(response.status_code, _json(response), dict(response.headers))
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        raise AgentryError("this endpoint streams its runs: use stream() or run()", code="streaming_endpoint")
    if call.text:
        return call.parse(response.text)
    return call.parse(_json(response) if response.content else None)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"error": {"code": "http_error", "message": response.text[:500] or f"HTTP {response.status_code}"}}


def connection_error(base_url: str, err: httpx.TransportError) -> AgentryError:
    from .errors import APIConnectionError

    return APIConnectionError(f"cannot reach {base_url}: {type(err).__name__}", code="connection_error")


def finished(status: m.RunStatus) -> m.RunResult | None:
    """A polled run's result once it is done; its typed error if it failed."""
    if status.status == "succeeded":
        return m.RunResult(run_id=status.run_id, output=status.output, usage=status.usage or m.Usage())
    if status.status in ("failed", "timeout"):
        error = status.error or {}
        cls = RunTimeoutError if status.status == "timeout" else UpstreamError
        code = error.get("code", status.status)
        raise cls(error.get("message", f"the run {status.status}"), code=code, headers={"x-run-id": status.run_id})
    return None


class SseParser:
    """Server-sent events, line by line: `feed` returns an event when a blank line ends one."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self.data:
                return None
            done = (self.event, "\n".join(self.data))
            self.event, self.data = "message", []
            return done
        if line.startswith(":"):
            return None  # a comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def stream_event(kind: str, data: str, run_id: str | None) -> m.StreamEvent:
    """A run's event; an `error` event is raised as its typed error."""
    import json

    payload = json.loads(data) if data else {}
    if kind == "error":
        status = int(payload.get("status") or 500)
        headers = {"x-run-id": run_id or str(payload.get("run_id", ""))}
        raise error_for(status, {"error": payload}, headers)
    return m.StreamEvent(event=kind, data=payload)
