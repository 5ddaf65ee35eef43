"""Run dispatch: publish `run.requested`, then wait for the runner's terminal progress (or relay it as SSE).

The gateway subscribes to `run.progress.<run_id>` before publishing, so it cannot miss the answer; if the
terminal message is lost anyway, it asks the runner for the record before answering 504.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind
from sse_starlette import ServerSentEvent

from agentry_common import asyncapi, rpc, subjects, tracing
from agentry_common.broker import publish_event
from agentry_common.errors import AgentryError, ServiceUnavailable, Timeout, error_from
from agentry_common.events import (
    ChatTurn,
    DoneData,
    EndpointSnapshot,
    ErrorData,
    ErrorProgress,
    RunProgress,
    RunRequested,
    new_id,
    progress_of,
    run_progress,
)
from agentry_common.requests import GetRun, RunRecord

from . import sse
from .schemas import RunResult
from .settings import Settings

log = logging.getLogger(__name__)

asyncapi.publishes(
    subjects.RUN_REQUESTED, RunRequested, by="gateway", stream=subjects.RUNS_STREAM,
    description="A run the gateway accepted (200/202 follows only once the stream has stored it), with a "
    "snapshot of its endpoint's configuration (secret ids, never secrets).",
)  # fmt: skip
asyncapi.consumes(
    subjects.RUN_PROGRESS, RunProgress, by="gateway",  # type: ignore[arg-type]  # a union of Event classes
    description="The gateway subscribes to a run's progress before publishing it, and answers (or streams "
    "the SSE events) from it.",
)  # fmt: skip


def _terminal_from_record(record: RunRecord) -> RunProgress | None:
    if record.status == "succeeded":
        done = DoneData(output=record.output, usage=record.usage, tool_calls=record.tool_calls)
        return progress_of(record.id, done)
    if record.status in ("failed", "timeout"):
        err = record.error.for_caller() if record.error else None
        status = record.http_status or (504 if record.status == "timeout" else 500)
        failed = ErrorData(code=err.code if err else record.status, message=err.message if err else "", status=status)
        return progress_of(record.id, failed)
    return None


def progress_frame(run_id: str, progress: RunProgress) -> ServerSentEvent:
    """The SSE event of one progress message: named by its kind, its data the progress data after the run id."""
    data = {"run_id": run_id, **progress.data.model_dump(mode="json")}
    return sse.event(orjson.dumps(data).decode(), progress.event)


def raise_for_error(run_id: str, progress: ErrorProgress) -> None:
    data = progress.data
    err = error_from(data.status, data.code, data.message)
    err.headers["X-Run-Id"] = run_id
    raise err


class Dispatcher:
    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.async_runs: KeyValue | None = None

    async def start(self) -> None:
        from nats.js.api import KeyValueConfig

        config = KeyValueConfig(
            bucket=subjects.ASYNC_RUNS_BUCKET, ttl=self.settings.async_run_ttl_s, replicas=self.settings.stream_replicas
        )
        try:
            self.async_runs = await self.js.create_key_value(config)
        except Exception:
            self.async_runs = await self.js.key_value(subjects.ASYNC_RUNS_BUCKET)

    async def _publish(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str,
        key_id: str | None,
        history: Sequence[ChatTurn],
    ) -> None:
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": subjects.RUN_REQUESTED,
            "agentry.run_id": run_id,
            "agentry.endpoint_id": snapshot.id,
        }
        # The run's trace starts here (or continues the caller's): the runner and billing carry it on.
        with tracing.span(f"{subjects.RUN_REQUESTED} publish", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            event = RunRequested(
                run_id=run_id,
                endpoint=snapshot,
                input=input,
                is_test=is_test,
                key_id=key_id,
                history=list(history),
                trace=tracing.carrier(),
            )
            try:
                await publish_event(self.js, subjects.RUN_REQUESTED, event, timeout=self.settings.rpc_timeout_s)
            except Exception as err:
                log.warning(
                    "run.requested not accepted by the broker: %s", type(err).__name__, extra={"run_id": run_id}
                )
                tracing.fail(span, "broker_unavailable")
                raise ServiceUnavailable(
                    "the broker did not accept the run; nothing was started", code="broker_unavailable"
                ) from None

    async def _open(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str,
        key_id: str | None,
        history: Sequence[ChatTurn],
    ) -> tuple[Subscription, asyncio.Future[Msg] | None]:
        """Subscribe to the run's progress, then publish it: the answer cannot arrive before we listen.

        A run that streams nothing sends one progress message, its terminal one, so the server is told to drop
        the interest after it (`max_msgs=1`, in the same write as the SUB): no UNSUB per run. That one message
        resolves a future (nats-py's `subscribe(future=)`): `next_msg` would cost a uuid and two tasks per run.
        """
        subject = subjects.run_progress(run_id)
        only: asyncio.Future[Msg] | None = None
        if snapshot.enable_streaming:
            sub = await self.nc.subscribe(subject)
        else:
            only = asyncio.get_running_loop().create_future()
            sub = await self.nc.subscribe(subject, future=only, max_msgs=1)
        try:
            await self._publish(snapshot, input, is_test, run_id, key_id, history)
        except BaseException:
            await self._close(sub, run_id)
            raise
        return sub, only

    async def _close(self, sub: Subscription, run_id: str) -> None:
        try:
            await sub.unsubscribe()
        except Exception:  # the connection may be gone; the subscription went with it
            log.debug("unsubscribe failed", extra={"run_id": run_id})

    async def _follow(
        self, sub: Subscription, run_id: str, timeout_ms: int, only: asyncio.Future[Msg] | None = None
    ) -> AsyncGenerator[RunProgress, None]:
        """Yield the run's progress up to and including its terminal event (`only`: the one it sends)."""
        deadline = time.monotonic() + timeout_ms / 1000 + self.settings.run_wait_grace_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise NatsTimeout
                    if only is not None:
                        msg = await asyncio.wait_for(only, remaining)
                    else:
                        msg = await sub.next_msg(timeout=remaining)
                except (NatsTimeout, TimeoutError):
                    yield await self._recover(run_id)
                    return
                progress = run_progress.validate_json(msg.data)
                yield progress
                if progress.terminal:
                    return
        finally:
            if not (only is not None and sub.delivered):  # else the server dropped the interest with the message
                await self._close(sub, run_id)

    async def _recover(self, run_id: str) -> RunProgress:
        """No terminal progress arrived in time: the runner's record is the truth, if it has one."""
        try:
            record = await self.get(run_id)
        except AgentryError:  # not recorded yet, or the runner cannot say right now: it is a timeout to us
            record = None
        terminal = _terminal_from_record(record) if record else None
        if terminal is not None:
            return terminal
        lost = ErrorData(code="timeout", message="the run did not finish in time", status=Timeout.status_code)
        return progress_of(run_id, lost)

    async def run(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str | None = None,
        key_id: str | None = None,
        history: Sequence[ChatTurn] = (),
    ) -> RunResult:
        run_id = run_id or new_id("run")
        sub, only = await self._open(snapshot, input, is_test, run_id, key_id, history)
        # Closed here, not by a finalizer task whenever the event loop gets to it: a streaming endpoint's
        # subscription ends before the answer is sent.
        async with aclosing(self._follow(sub, run_id, snapshot.timeout_ms, only)) as events:
            async for progress in events:
                if progress.event == "done":
                    done = progress.data
                    return RunResult(run_id=run_id, output=done.output, usage=done.usage, tool_calls=done.tool_calls)
                if progress.event == "error":
                    raise_for_error(run_id, progress)
        raise AgentryError("run ended without a result")  # unreachable: _follow always ends terminal

    async def progress(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str | None = None,
        key_id: str | None = None,
        history: Sequence[ChatTurn] = (),
    ) -> tuple[str, AsyncGenerator[RunProgress, None]]:
        """Start the run now (so a broker failure is still a 503); its progress up to the terminal event.
        The snapshot must have `enable_streaming` (else the runner sends only the terminal event)."""
        run_id = run_id or new_id("run")
        sub, only = await self._open(snapshot, input, is_test, run_id, key_id, history)
        return run_id, self._follow(sub, run_id, snapshot.timeout_ms, only)

    async def stream(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str | None = None,
        key_id: str | None = None,
    ) -> tuple[str, AsyncIterator[ServerSentEvent]]:
        """Start the run now (so a broker failure is still a 503), and relay its progress as SSE events: the
        event's name is the progress kind, its data the progress data after the run's id."""
        run_id, events = await self.progress(snapshot, input, is_test, run_id, key_id)

        async def frames() -> AsyncIterator[ServerSentEvent]:
            async with aclosing(events):
                async for progress in events:
                    yield progress_frame(run_id, progress)

        return run_id, frames()

    async def submit(
        self,
        snapshot: EndpointSnapshot,
        input: Any,
        is_test: bool,
        run_id: str | None = None,
        key_id: str | None = None,
    ) -> str:
        """Async mode: remember who owns the run (so its status is answerable while queued), then publish."""
        run_id = run_id or new_id("run")
        assert self.async_runs is not None
        owner = orjson.dumps({"endpoint_id": snapshot.id, "owner_id": snapshot.owner_id})
        try:
            await self.async_runs.put(run_id, owner)
        except Exception:
            raise ServiceUnavailable(
                "the broker is unavailable; nothing was started", code="broker_unavailable"
            ) from None
        await self._publish(snapshot, input, is_test, run_id, key_id, ())
        return run_id

    async def queued_owner(self, run_id: str) -> dict[str, str] | None:
        assert self.async_runs is not None
        try:
            entry = await self.async_runs.get(run_id)
        except Exception:
            return None
        return orjson.loads(entry.value) if entry and entry.value else None

    async def get(self, run_id: str) -> RunRecord:
        return await rpc.call(
            self.nc, subjects.RUNS_GET, GetRun(run_id=run_id), RunRecord,
            timeout=self.settings.rpc_timeout_s, unavailable="the runner is unavailable",
        )  # fmt: skip
