"""One delivered run, brought to its single recorded outcome and announced.

The database row decides: the first terminal write wins (`RunsRepository.finish`), and what is announced —
the terminal progress, then `run.completed` / `run.failed` on JetStream with `Nats-Msg-Id` — is always
derived from the stored row. A redelivery of a finished run re-announces it and never runs it again.

Executing the run is `execution.Executor`'s; its outcome is an `outcome.RunOutcome`, the row's values.

A run holds no transaction while it executes: it writes at most twice (a `running` row for async runs so
polling can show it, and the terminal row), each a single autocommitted statement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from nats.aio.client import Client as Nats
from opentelemetry.trace import SpanKind
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from agentry_common import asyncapi, subjects, tracing
from agentry_common.broker import publish_event
from agentry_common.errors import NotFound, ValidationFailed
from agentry_common.events import (
    DoneProgress,
    EndpointSnapshot,
    RunCompleted,
    RunFailed,
    RunProgress,
    RunRequested,
    SecretsChanged,
)
from agentry_common.logging import log_context
from agentry_common.requests import RunPage, RunRecord
from agentry_common.secrets import SecretCache

from . import metrics, outcome, schemas
from .clients import HttpClients
from .database import Database
from .execution import Executor, provider_label
from .models import TERMINAL, StoredRun
from .outcome import RunOutcome, RunStart, now
from .repository import Finishes, RunsRepository
from .settings import Settings
from .tool_cache import ToolCache

__all__ = ["HttpClients", "RunnerService"]  # HttpClients: where the entrypoints have always imported it from

log = logging.getLogger(__name__)
T = TypeVar("T")
# An outage a run rides out (restart, failover, pool exhausted), not a statement that is wrong.
_DATABASE_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError)


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
# RunProgress is a union of Event classes discriminated by `event`; FastStream documents it as a `oneOf`.
asyncapi.publishes(
    subjects.RUN_PROGRESS, RunProgress, by="runner",  # type: ignore[arg-type]
    description="Progress of one run for streaming callers (`thinking`, `tool_call`, `tool_result`); every run "
    "ends with one terminal `done` or `error`, sent just before its outcome event once the run is recorded. "
    "`data` is typed by `event`.",
)  # fmt: skip


class RunnerService:
    def __init__(self, settings: Settings, nc: Nats, db: Database, clients: HttpClients):
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.db = db
        self.finishes = Finishes(db)
        self.clients = clients
        self.secrets = SecretCache(
            nc, rpc_timeout_s=settings.rpc_timeout_s, ttl_s=settings.secret_cache_ttl_s,
            max_entries=settings.secret_cache_size,
            on_lookup=lambda source: metrics.SECRET_LOOKUPS.labels(source).inc(),
        )  # fmt: skip
        self.tool_cache = ToolCache(settings.mcp_tools_cache_ttl_s, settings.mcp_tools_cache_size)
        self.executor = Executor(settings, nc, clients, self.secrets, self.tool_cache)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[RunsRepository]:
        """Every repository statement is a single autocommitted one: there is no transaction to hold."""
        yield RunsRepository(self.db, self.finishes)

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
            ended = outcome.failed(event, delivery, now(), "internal_error", message)
            metrics.LAST_DELIVERY.inc()
        else:
            ended = await self.execute(event, delivery)
        stored, ours = await self._ride_out(lambda repo: repo.finish(ended))
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
        # The first try goes without tenacity: its bookkeeping costs tens of microseconds, on every run's path.
        # Its failure is replayed as tenacity's first attempt, so the waits are those of every attempt.
        first: Exception | None
        try:
            return await self._statement(statement)
        except _DATABASE_DOWN as failed:
            first = failed

        async def attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await self._statement(statement)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.runner_record_retry_s
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_DATABASE_DOWN), wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=lambda state: loop.time() + state.upcoming_sleep > deadline, reraise=True,
            before_sleep=lambda _: log.warning("database unavailable; retrying", exc_info=False),
        )  # fmt: skip
        result: T = await retrying(attempt)
        return result

    async def _statement(self, statement: Callable[[RunsRepository], Awaitable[T]]) -> T:
        async with self.unit_of_work() as repo:
            return await statement(repo)

    def _count(self, endpoint: EndpointSnapshot, run: StoredRun) -> None:
        provider = provider_label(endpoint)
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
        # Tool results are clipped, so only a freak run gets here.
        if len(payload) > self.nc.max_payload and isinstance(progress, DoneProgress):
            progress.data.tool_calls = []
            payload = progress.model_dump_json().encode()
        await self.nc.publish(subjects.run_progress(run.id), payload)
        # One turn of the loop lets nats-py's flusher write the progress now, rather than once the outcome
        # event below is built and serialized: the caller's answer need not wait for that.
        await asyncio.sleep(0)
        event = schemas.outcome_event(run)
        event.trace = tracing.carrier()
        subject = subjects.RUN_COMPLETED if run.status == "succeeded" else subjects.RUN_FAILED
        await publish_event(self.js, subject, event)

    async def execute(self, event: RunRequested, delivery: int) -> RunOutcome:
        """Run the agent within the deadline; its outcome, whatever it is (recorded by the caller)."""

        async def mark_running(start: RunStart) -> None:
            await self._ride_out(lambda repo: repo.mark_running(start))

        return await self.executor.execute(event, delivery, mark_running)
