"""One delivered run, brought to its single recorded outcome and announced.

The database row decides: the first terminal write wins (`RunsRepository.finish`), and what is announced —
the terminal progress, then `run.completed` / `run.failed` on JetStream with `Nats-Msg-Id` — is always
derived from the stored row. A redelivery of a finished run re-announces it and never runs it again.

A run holds no transaction while it executes: it writes at most twice (a `running` row for async runs so
polling can show it, and the terminal row), each a single autocommitted statement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
import orjson
import psycopg
from nats.aio.client import Client as Nats
from opentelemetry.trace import SpanKind

from agentry_common import asyncapi, subjects, tracing
from agentry_common.broker import publish_event
from agentry_common.errors import AgentryError, NotFound, ServiceUnavailable, UpstreamFailed, ValidationFailed
from agentry_common.events import (
    EndpointSnapshot,
    RunCompleted,
    RunFailed,
    RunProgress,
    RunRequested,
    SecretsChanged,
)
from agentry_common.logging import log_context
from agentry_common.netguard import guard_transport
from agentry_common.requests import RunPage, RunRecord
from agentry_common.secrets import SecretCache

from . import metrics, schemas
from .agent import Agent, RunState
from .database import Database
from .models import TERMINAL, StoredRun
from .pricing import cost_cents
from .providers import PROVIDERS, Connection, ProviderFailed
from .providers.http import guarded_session, platform_session
from .repository import RunsRepository
from .settings import Settings
from .tool_cache import ToolCache
from .tools import Toolbox

log = logging.getLogger(__name__)
T = TypeVar("T")
PLATFORM_PROVIDERS = ("openai", "groq", "anthropic", "gemini")


asyncapi.consumes(
    subjects.SECRETS_CHANGED, SecretsChanged, by="runner",
    description="Every runner replica drops its cached values of these secrets at once.",
)  # fmt: skip
asyncapi.publishes(
    subjects.RUN_COMPLETED, RunCompleted, by="runner", stream=subjects.RUN_EVENTS_STREAM,
    description="A run succeeded; its usage is final. Billing charges the owner `price_per_run_cents` unless "
    "`is_test` (once per run_id, however often this event is delivered).",
)  # fmt: skip
asyncapi.publishes(
    subjects.RUN_FAILED, RunFailed, by="runner", stream=subjects.RUN_EVENTS_STREAM,
    description="A run failed or timed out (`status`), with the error its caller got. Never charged.",
)  # fmt: skip
asyncapi.publishes(
    subjects.RUN_PROGRESS, RunProgress, by="runner",
    description="Progress of one run for streaming callers (`thinking`, `tool_call`, `tool_result`); every run "
    "ends with one terminal `done` or `error`, sent just before its outcome event once the run is recorded.",
)  # fmt: skip


class HttpClients:
    """One pool per destination kind, for the life of the process: connection reuse is most of the speed."""

    def __init__(self, settings: Settings):
        self.llm = platform_session()
        self.custom_llm = guarded_session(allow_private=settings.allow_private_urls)
        self.mcp = guard_transport(
            httpx2.AsyncHTTPTransport(trust_env=False, limits=httpx2.Limits(max_connections=256)),
            allow_private=settings.allow_private_urls,
        )

    async def aclose(self) -> None:
        await self.llm.close()
        await self.custom_llm.close()
        await self.mcp.aclose()


def now() -> datetime:
    return datetime.now(UTC)


def storable(value: Any) -> Any:
    """`value` with every NUL character replaced by U+FFFD: PostgreSQL stores none in text or JSONB, and a
    model or a tool server may send one. (The run's input cannot hold one: the gateway refuses it.)"""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return value


class RunnerService:
    def __init__(self, settings: Settings, nc: Nats, db: Database, clients: HttpClients):
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.db = db
        self.clients = clients
        self.secrets = SecretCache(
            nc, rpc_timeout_s=settings.rpc_timeout_s, ttl_s=settings.secret_cache_ttl_s,
            max_entries=settings.secret_cache_size,
            on_lookup=lambda source: metrics.SECRET_LOOKUPS.labels(source).inc(),
        )  # fmt: skip
        self.tool_cache = ToolCache(settings.mcp_tools_cache_ttl_s, settings.mcp_tools_cache_size)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[RunsRepository]:
        """Every repository statement is a single autocommitted one: there is no transaction to hold."""
        yield RunsRepository(self.db)

    async def process(self, event: RunRequested, delivery: int) -> None:
        """Bring the run to its outcome and announce it; raises when Postgres or NATS fail (→ redelivery)."""
        endpoint = event.endpoint
        attributes: dict[str, str | int] = {
            "agentry.run_id": event.run_id,
            "agentry.endpoint_id": endpoint.id,
            "gen_ai.provider.name": endpoint.llm_provider,
            "gen_ai.request.model": endpoint.llm_model,
            "messaging.message.delivery_count": delivery,
        }
        # The run continues the trace of the request that started it; its outcome event carries it on.
        with (
            log_context(run_id=event.run_id),
            tracing.span("run", kind=SpanKind.CONSUMER, parent=event.trace, attributes=attributes) as span,
        ):
            status = await self._process(event, delivery)
            span.set_attribute("agentry.run.status", status)
            if status != "succeeded":
                tracing.fail(span, status)

    async def _process(self, event: RunRequested, delivery: int) -> str:
        if delivery > 1:
            existing = await self._ride_out(lambda repo: repo.get(event.run_id))
            if existing is not None and existing.status in TERMINAL:
                log.info("run already finished; announcing it again", extra={"run_id": event.run_id})
                metrics.REANNOUNCED.inc()
                await self.announce(existing)
                return existing.status
        if delivery >= self.settings.runner_max_deliveries:
            # Earlier deliveries died mid-run (a crash, a kill): running it again could take this runner down
            # too, and no one would be left to record the run. Record it failed instead.
            message = f"the run was interrupted on each of {delivery - 1} deliveries (runner crash or outage)"
            values = self._failed(event, delivery, now(), "internal_error", message)
            metrics.LAST_DELIVERY.inc()
        else:
            values = await self.execute(event, delivery)
        stored, ours = await self._ride_out(lambda repo: repo.finish(values))
        if ours:
            self._count(event.endpoint, stored)
        else:
            log.info("another delivery recorded this run first", extra={"run_id": event.run_id})
        await self.announce(stored)
        return stored.status

    async def _ride_out(self, statement: Callable[[RunsRepository], Awaitable[T]]) -> T:
        """Run one database statement of a run, riding out an outage in-process: handing the run back would
        spend one of its deliveries (and, on the last, record it failed) for an outage, not a crash. The
        heartbeat keeps the message alive meanwhile; past `runner_record_retry_s` it goes back anyway."""
        deadline = asyncio.get_running_loop().time() + self.settings.runner_record_retry_s
        pause = 0.2
        while True:
            try:
                async with self.unit_of_work() as repo:
                    return await statement(repo)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError):
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise
                log.warning("database unavailable; retrying", exc_info=False)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _count(self, endpoint: EndpointSnapshot, run: StoredRun) -> None:
        provider = self._provider_label(endpoint)
        metrics.RUNS.labels(provider, metrics.model_label(provider, endpoint.llm_model), run.status).inc()
        if run.status != "succeeded":
            metrics.RUN_ERRORS.labels(provider, run.error_code or run.status).inc()

    async def get(self, run_id: str) -> RunRecord:
        async with self.unit_of_work() as repo:
            run = await repo.get(run_id)
        if run is None:
            raise NotFound("no such run (yet)", code="run_not_found")
        return schemas.record(run)

    async def page(self, endpoint_id: str, limit: int, cursor: str | None, key_id: str | None = None) -> RunPage:
        if not 1 <= limit <= 100:
            raise ValidationFailed("limit must be between 1 and 100", code="validation_error")
        after = schemas.decode_cursor(cursor) if cursor else None
        async with self.unit_of_work() as repo:
            runs = await repo.page(endpoint_id, limit + 1, after, key_id)
        more = len(runs) > limit
        runs = runs[:limit]
        return RunPage(
            runs=[schemas.record(r) for r in runs],
            next_cursor=schemas.encode_cursor(runs[-1]) if more else None,
        )

    async def announce(self, run: StoredRun) -> None:
        """The terminal progress the gateway waits for, then the outcome event; returns once JetStream stored
        the event (and only then is the run's request acknowledged).

        The progress does not wait for that ack: the run is already committed, so the caller may have its
        answer; should the event not be stored, the run request stays unacknowledged and its redelivery finds
        the finished run and announces it again, so billing still gets its `run.completed`.
        """
        progress = schemas.terminal_progress(run)
        payload = progress.model_dump_json().encode()
        if len(payload) > self.nc.max_payload:  # tool results are clipped, so only a freak run gets here
            progress.data["tool_calls"] = []
            payload = progress.model_dump_json().encode()
        await self.nc.publish(subjects.run_progress(run.id), payload)
        # One turn of the loop lets nats-py's flusher write the progress now, rather than once the outcome
        # event below is built and serialized: the caller's answer need not wait for that.
        await asyncio.sleep(0)
        event = schemas.outcome_event(run)
        event.trace = tracing.carrier()
        subject = subjects.RUN_COMPLETED if run.status == "succeeded" else subjects.RUN_FAILED
        await publish_event(self.js, subject, event)

    async def execute(self, event: RunRequested, delivery: int) -> dict[str, Any]:
        """Run the agent within the deadline; the row values of its outcome, whatever it is."""
        endpoint = event.endpoint
        started = now()
        if endpoint.async_mode:
            running = self._base(event, delivery, started)
            await self._ride_out(lambda repo: repo.mark_running(running))
        # The deadline counts from the request, so a run the gateway already answered 504 ends `timeout`.
        requested = min(event.requested_at, started)
        remaining = endpoint.timeout_ms / 1000 - (started - requested).total_seconds()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + remaining
        state = RunState()
        toolbox = Toolbox(self.clients.mcp, tool_timeout_s=self.settings.tool_timeout_s, cache=self.tool_cache)
        metrics.IN_FLIGHT.inc()
        try:
            async with asyncio.timeout_at(deadline) as budget:
                api_key, headers = await self._secrets(endpoint)
                await toolbox.open(
                    endpoint.servers, headers, owner_id=endpoint.owner_id, workspace_id=endpoint.workspace_id
                )
                conn = self._connection(endpoint, api_key)
                agent = Agent(PROVIDERS[endpoint.llm_provider], conn, toolbox, deadline, state, self._emitter(event))
                output = await agent.run(endpoint, event.input, event.history)
        except TimeoutError:
            if not budget.expired():
                raise
            message = f"the run did not finish within timeout_ms ({endpoint.timeout_ms} ms)"
            return self._finished(event, delivery, started, state, "timeout", error=("timeout", message))
        except ServiceUnavailable:
            raise  # a backing service (keys) is down: infrastructure, not the run's fault → redelivery
        except AgentryError as err:
            # The record (the owner's) keeps the provider's own words, redacted; its caller gets `message` only.
            message = err.for_owner() if isinstance(err, ProviderFailed) else err.message
            return self._finished(event, delivery, started, state, "failed", error=(err.code, message))
        finally:
            toolbox.close()
            metrics.IN_FLIGHT.dec()
            self._observe(endpoint, started, state)
        return self._finished(event, delivery, started, state, "succeeded", output=output)

    @staticmethod
    def _provider_label(endpoint: EndpointSnapshot) -> str:
        return endpoint.llm_provider if endpoint.llm_provider in PROVIDERS else "unknown"

    def _observe(self, endpoint: EndpointSnapshot, started: datetime, state: RunState) -> None:
        provider = self._provider_label(endpoint)
        model = metrics.model_label(provider, endpoint.llm_model)
        metrics.RUN_SECONDS.labels(provider).observe((now() - started).total_seconds())
        metrics.TOKENS.labels(provider, model, "input").inc(state.tokens_input)
        metrics.TOKENS.labels(provider, model, "output").inc(state.tokens_output)
        cost = cost_cents(
            endpoint.llm_provider, endpoint.llm_model, state.tokens_input, state.tokens_output,
            self.settings.platform_markup,
        )  # fmt: skip
        metrics.COST_CENTS.labels(provider, model).inc(cost)
        for call in state.tool_calls:
            metrics.TOOL_CALLS.labels("error" if call.error else "ok").inc()

    def _emitter(self, event: RunRequested) -> Any:
        """Non-terminal progress is for streaming runs only; nobody listens to it otherwise."""
        subject = subjects.run_progress(event.run_id)

        async def emit(kind: str, data: dict[str, Any]) -> None:
            if event.endpoint.enable_streaming:
                progress = RunProgress(run_id=event.run_id, event=kind, data=data)
                await self.nc.publish(subject, progress.model_dump_json().encode())

        return emit

    async def _secrets(self, endpoint: EndpointSnapshot) -> tuple[str | None, dict[str, dict[str, str] | str]]:
        """The BYO LLM key and each MCP server's headers (or why they are unusable), resolved in parallel (from
        memory, once seen: see `agentry_common.secrets`)."""

        async def llm_key() -> str | None:
            if not endpoint.llm_secret_id:
                return None
            try:
                return await self.secrets.get(endpoint.llm_secret_id, endpoint.owner_id)
            except NotFound:
                raise UpstreamFailed("the endpoint's LLM API key is gone", code="llm_auth_error") from None

        async def headers(secret_id: str | None) -> dict[str, str] | str:
            if not secret_id:
                return {}
            try:
                value = orjson.loads(await self.secrets.get(secret_id, endpoint.owner_id))
            except NotFound:
                return "the tool server's headers are gone"
            except orjson.JSONDecodeError:
                return "the tool server's headers are not a JSON object"
            if not isinstance(value, dict):
                return "the tool server's headers are not a JSON object"
            return {str(k): str(v) for k, v in value.items()}

        if not endpoint.servers:  # the common case: no tasks to gather
            return await llm_key(), {}
        key, found = await asyncio.gather(
            llm_key(), asyncio.gather(*(headers(s.headers_secret_id) for s in endpoint.servers))
        )
        return key, {s.slug: h for s, h in zip(endpoint.servers, found, strict=True)}

    def _connection(self, endpoint: EndpointSnapshot, byo_key: str | None) -> Connection:
        provider = endpoint.llm_provider
        if provider not in PROVIDERS:
            raise UpstreamFailed(f"unknown LLM provider {provider!r}", code="llm_provider_error")
        s = self.settings
        client, base_url, platform_key = self.clients.llm, "", s.custom_api_key
        if provider == "custom":
            if not endpoint.llm_base_url:
                raise UpstreamFailed("the custom provider needs llm_base_url", code="llm_provider_error")
            client, base_url = self.clients.custom_llm, endpoint.llm_base_url
        elif provider in PLATFORM_PROVIDERS:
            base_url = getattr(s, f"{provider}_base_url")
            platform_key = getattr(s, f"{provider}_api_key")
        api_key = byo_key or (platform_key.get_secret_value() if platform_key else None)
        if provider in PLATFORM_PROVIDERS and not api_key:
            raise UpstreamFailed(f"no API key is configured for provider {provider!r}", code="llm_auth_error")
        return Connection(
            client, base_url, api_key, timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries,
            backoff_s=s.llm_backoff_s,
        )  # fmt: skip

    def _base(self, event: RunRequested, delivery: int, started: datetime) -> dict[str, Any]:
        return {
            "id": event.run_id,
            "endpoint_id": event.endpoint.id,
            "owner_id": event.endpoint.owner_id,
            "is_test": event.is_test,
            "key_id": event.key_id,
            "input": event.input,
            "price_per_run_cents": event.endpoint.price_per_run_cents,
            "attempts": delivery,
            "created_at": event.requested_at,
            "started_at": started,
        }

    def _finished(
        self,
        event: RunRequested,
        delivery: int,
        started: datetime,
        state: RunState,
        status: str,
        output: Any = None,
        error: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        finished = now()
        endpoint = event.endpoint
        cost = cost_cents(
            endpoint.llm_provider, endpoint.llm_model, state.tokens_input, state.tokens_output,
            self.settings.platform_markup,
        )  # fmt: skip
        return {
            **self._base(event, delivery, started),
            "status": status,
            "output": storable(output),
            "tool_calls": storable([c.model_dump(mode="json") for c in state.tool_calls]),
            "tool_errors": sum(1 for c in state.tool_calls if c.error),
            "tokens_input": state.tokens_input,
            "tokens_output": state.tokens_output,
            "cost_cents": cost,
            "latency_ms": max(0, int((finished - event.requested_at).total_seconds() * 1000)),
            "iterations": state.iterations,
            "error_code": error[0] if error else None,
            "error_message": storable(error[1]) if error else None,
            "finished_at": finished,
        }

    def _failed(self, event: RunRequested, delivery: int, started: datetime, code: str, message: str) -> dict[str, Any]:
        return self._finished(event, delivery, started, RunState(), "failed", error=(code, message))
