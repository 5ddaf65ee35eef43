"""`Client` (blocking) and `AsyncClient` (asyncio) over httpx: one method per API operation (`_ops`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from . import _ops as ops
from . import models as m
from ._base import Settings, SseParser, connection_error, finished, read, stream_event
from ._ops import Call
from ._owner import AsyncOwnerMethods, OwnerMethods
from .errors import AgentryError

T = TypeVar("T")
Input = str | dict[str, Any]


class Client(OwnerMethods):
    """`Client(base_url, token=…, api_key=…)`; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 330.0,  # an endpoint may run for 300 s
        transport: httpx.BaseTransport | None = None,
    ):
        self.settings = Settings(base_url, token, api_key)
        self._http = httpx.Client(base_url=self.settings.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, json=call.json, params=call.params, headers=self.settings.headers(call)
            )
        except httpx.TransportError as err:
            raise connection_error(self.settings.base_url, err) from None
        return read(call, response)

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Any route with the owner's token, answered as parsed JSON (or the typed error): for routes newer than
        this SDK's methods."""
        return self._do(Call(method, path, lambda b: b, json=json, params=params or {}))

    # workspaces and MCP servers
    def create_workspace(self, name: str) -> m.Workspace:
        return self._do(ops.create_workspace(name))

    def list_workspaces(self) -> list[m.Workspace]:
        return self._do(ops.list_workspaces())

    def get_workspace(self, workspace_id: str) -> m.Workspace:
        return self._do(ops.get_workspace(workspace_id))

    def delete_workspace(self, workspace_id: str) -> None:
        return self._do(ops.delete_workspace(workspace_id))

    def create_server(self, workspace_id: str, name: str, url: str, headers: dict[str, str] | None = None) -> m.Server:
        return self._do(ops.create_server(workspace_id, name, url, headers))

    def list_servers(self, workspace_id: str) -> list[m.Server]:
        return self._do(ops.list_servers(workspace_id))

    def get_server(self, workspace_id: str, server_id: str) -> m.Server:
        return self._do(ops.get_server(workspace_id, server_id))

    def delete_server(self, workspace_id: str, server_id: str) -> None:
        return self._do(ops.delete_server(workspace_id, server_id))

    # endpoints
    def create_endpoint(self, workspace_id: str, name: str, system_prompt: str, **fields: Any) -> m.EndpointCreated:
        return self._do(ops.create_endpoint(workspace_id, name, system_prompt, **fields))

    def list_endpoints(self, workspace_id: str | None = None) -> list[m.Endpoint]:
        return self._do(ops.list_endpoints(workspace_id))

    def get_endpoint(self, endpoint_id: str) -> m.Endpoint:
        return self._do(ops.get_endpoint(endpoint_id))

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> m.Endpoint:
        return self._do(ops.update_endpoint(endpoint_id, **fields))

    def delete_endpoint(self, endpoint_id: str) -> None:
        return self._do(ops.delete_endpoint(endpoint_id))

    def regenerate_key(self, endpoint_id: str, *, grace_seconds: int | None = None) -> str:
        return self._do(ops.regenerate_key(endpoint_id, grace_seconds))

    def test_endpoint(self, endpoint_id: str, input: Input) -> m.RunResult:
        return self._do(ops.test_endpoint(endpoint_id, input))

    def list_runs(
        self, endpoint_id: str, limit: int = 20, cursor: str | None = None, *, key_id: str | None = None
    ) -> m.RunPage:
        return self._do(ops.list_runs(endpoint_id, limit, cursor, key_id))

    # runs
    def submit(self, slug: str, input: Input, *, api_key: str | None = None) -> m.RunResult | m.RunAccepted:
        """A run of a non-streaming endpoint: its result, or (async endpoints) its acceptance, without waiting."""
        return self._do(ops.submit(slug, input, api_key))

    def run(self, slug: str, input: Input, *, api_key: str | None = None) -> m.RunResult:
        """Run and return the result, whatever the endpoint's mode: a streaming endpoint's events are read to
        the end, an async endpoint's run is polled until it is done."""
        for event in self.stream(slug, input, api_key=api_key):
            if event.result is not None:
                return event.result
        raise AgentryError("the run's stream ended without a result", code="incomplete_stream")

    def run_status(self, run_id: str, *, api_key: str | None = None) -> m.RunStatus:
        return self._do(ops.run_status(run_id, api_key))

    def wait(self, run_id: str, *, api_key: str | None = None, poll_s: float = 0.5) -> m.RunResult:
        while (result := finished(self.run_status(run_id, api_key=api_key))) is None:
            time.sleep(poll_s)
        return result

    def stream(self, slug: str, input: Input, *, api_key: str | None = None) -> Iterator[m.StreamEvent]:
        """A run's events as they happen (`thinking`, `tool_call`, `tool_result`, then `done`); an `error` event
        is raised as its typed error. An endpoint that does not stream yields its result as one `done`."""
        call = ops.submit(slug, input, api_key)
        try:
            with self._http.stream("POST", call.path, json=call.json, headers=self.settings.headers(call)) as response:
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    response.read()
                    answer = read(call, response)
                    if isinstance(answer, m.RunAccepted):
                        answer = self.wait(answer.run_id, api_key=api_key)
                    yield m.StreamEvent(event="done", data=answer.model_dump(mode="json"))
                    return
                parser, run_id = SseParser(), response.headers.get("x-run-id")
                for line in response.iter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield stream_event(*event, run_id)
        except httpx.TransportError as err:
            raise connection_error(self.settings.base_url, err) from None

    # wallet
    def balance(self) -> m.Balance:
        return self._do(ops.balance())

    def deposit(self, amount_cents: int, *, idempotency_key: str | None = None) -> m.Deposited | m.DepositStarted:
        return self._do(ops.deposit(amount_cents, idempotency_key))

    def transactions(self, limit: int = 20, cursor: str | None = None) -> m.TransactionPage:
        return self._do(ops.transactions(limit, cursor))

    def admin_credit(
        self, user_id: str, amount_cents: int, reason: str, *, idempotency_key: str | None = None
    ) -> m.Deposited:
        return self._do(ops.admin_credit(user_id, amount_cents, reason, idempotency_key))

    # the OpenAI-compatible face (for the full client, use the `openai` SDK with base_url=<gateway>/v1)
    def chat_completion(self, model: str, messages: list[dict[str, Any]], *, api_key: str | None = None) -> Any:
        return self._do(ops.chat_completion(model, messages, api_key))

    def list_models(self, *, api_key: str | None = None) -> list[str]:
        return self._do(ops.list_models(api_key))

    def get_model(self, model: str, *, api_key: str | None = None) -> Any:
        return self._do(ops.get_model(model, api_key))


class AsyncClient(AsyncOwnerMethods):
    """The same methods as `Client`, awaited; `stream` is an async iterator."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 330.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.settings = Settings(base_url, token, api_key)
        self._http = httpx.AsyncClient(base_url=self.settings.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _do(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, json=call.json, params=call.params, headers=self.settings.headers(call)
            )
        except httpx.TransportError as err:
            raise connection_error(self.settings.base_url, err) from None
        return read(call, response)

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return await self._do(Call(method, path, lambda b: b, json=json, params=params or {}))

    # workspaces and MCP servers
    async def create_workspace(self, name: str) -> m.Workspace:
        return await self._do(ops.create_workspace(name))

    async def list_workspaces(self) -> list[m.Workspace]:
        return await self._do(ops.list_workspaces())

    async def get_workspace(self, workspace_id: str) -> m.Workspace:
        return await self._do(ops.get_workspace(workspace_id))

    async def delete_workspace(self, workspace_id: str) -> None:
        return await self._do(ops.delete_workspace(workspace_id))

    async def create_server(
        self, workspace_id: str, name: str, url: str, headers: dict[str, str] | None = None
    ) -> m.Server:
        return await self._do(ops.create_server(workspace_id, name, url, headers))

    async def list_servers(self, workspace_id: str) -> list[m.Server]:
        return await self._do(ops.list_servers(workspace_id))

    async def get_server(self, workspace_id: str, server_id: str) -> m.Server:
        return await self._do(ops.get_server(workspace_id, server_id))

    async def delete_server(self, workspace_id: str, server_id: str) -> None:
        return await self._do(ops.delete_server(workspace_id, server_id))

    # endpoints
    async def create_endpoint(
        self, workspace_id: str, name: str, system_prompt: str, **fields: Any
    ) -> m.EndpointCreated:
        return await self._do(ops.create_endpoint(workspace_id, name, system_prompt, **fields))

    async def list_endpoints(self, workspace_id: str | None = None) -> list[m.Endpoint]:
        return await self._do(ops.list_endpoints(workspace_id))

    async def get_endpoint(self, endpoint_id: str) -> m.Endpoint:
        return await self._do(ops.get_endpoint(endpoint_id))

    async def update_endpoint(self, endpoint_id: str, **fields: Any) -> m.Endpoint:
        return await self._do(ops.update_endpoint(endpoint_id, **fields))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        return await self._do(ops.delete_endpoint(endpoint_id))

    async def regenerate_key(self, endpoint_id: str, *, grace_seconds: int | None = None) -> str:
        return await self._do(ops.regenerate_key(endpoint_id, grace_seconds))

    async def test_endpoint(self, endpoint_id: str, input: Input) -> m.RunResult:
        return await self._do(ops.test_endpoint(endpoint_id, input))

    async def list_runs(
        self, endpoint_id: str, limit: int = 20, cursor: str | None = None, *, key_id: str | None = None
    ) -> m.RunPage:
        return await self._do(ops.list_runs(endpoint_id, limit, cursor, key_id))

    # runs
    async def submit(self, slug: str, input: Input, *, api_key: str | None = None) -> m.RunResult | m.RunAccepted:
        return await self._do(ops.submit(slug, input, api_key))

    async def run(self, slug: str, input: Input, *, api_key: str | None = None) -> m.RunResult:
        async for event in self.stream(slug, input, api_key=api_key):
            if event.result is not None:
                return event.result
        raise AgentryError("the run's stream ended without a result", code="incomplete_stream")

    async def run_status(self, run_id: str, *, api_key: str | None = None) -> m.RunStatus:
        return await self._do(ops.run_status(run_id, api_key))

    async def wait(self, run_id: str, *, api_key: str | None = None, poll_s: float = 0.5) -> m.RunResult:
        # Polling another process over HTTP: there is no local event to wait on.
        while (result := finished(await self.run_status(run_id, api_key=api_key))) is None:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
        return result

    async def stream(self, slug: str, input: Input, *, api_key: str | None = None) -> AsyncIterator[m.StreamEvent]:
        call = ops.submit(slug, input, api_key)
        try:
            async with self._http.stream(
                "POST", call.path, json=call.json, headers=self.settings.headers(call)
            ) as response:
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    await response.aread()
                    answer = read(call, response)
                    if isinstance(answer, m.RunAccepted):
                        answer = await self.wait(answer.run_id, api_key=api_key)
                    yield m.StreamEvent(event="done", data=answer.model_dump(mode="json"))
                    return
                parser, run_id = SseParser(), response.headers.get("x-run-id")
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield stream_event(*event, run_id)
        except httpx.TransportError as err:
            raise connection_error(self.settings.base_url, err) from None

    # wallet
    async def balance(self) -> m.Balance:
        return await self._do(ops.balance())

    async def deposit(self, amount_cents: int, *, idempotency_key: str | None = None) -> m.Deposited | m.DepositStarted:
        return await self._do(ops.deposit(amount_cents, idempotency_key))

    async def transactions(self, limit: int = 20, cursor: str | None = None) -> m.TransactionPage:
        return await self._do(ops.transactions(limit, cursor))

    async def admin_credit(
        self, user_id: str, amount_cents: int, reason: str, *, idempotency_key: str | None = None
    ) -> m.Deposited:
        return await self._do(ops.admin_credit(user_id, amount_cents, reason, idempotency_key))

    # the OpenAI-compatible face
    async def chat_completion(self, model: str, messages: list[dict[str, Any]], *, api_key: str | None = None) -> Any:
        return await self._do(ops.chat_completion(model, messages, api_key))

    async def list_models(self, *, api_key: str | None = None) -> list[str]:
        return await self._do(ops.list_models(api_key))

    async def get_model(self, model: str, *, api_key: str | None = None) -> Any:
        return await self._do(ops.get_model(model, api_key))
