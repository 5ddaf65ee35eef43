"""The `run.requested` consumer: a durable pull consumer on the RUNS work queue, shared by every replica.

Written on nats-py directly rather than as a FastStream subscriber: a runner must fetch a run only when it
has a free slot (a fetched run waiting in a local buffer has its ack timer running and no heartbeat, and
would be redelivered elsewhere while it waits), and must heartbeat (`+WPI`) each run while it executes.

Acks: `ack` once the outcome is recorded and announced; `nak` with a delay when Postgres/NATS failed (the
run is retried); `term` for a message that is not a RunRequested at all. JetStream's own `max_deliver` is
unlimited so a run is never silently dropped while infrastructure is down; the service bounds executions
with `runner_max_deliveries` and records the last delivery failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from agentry_common import asyncapi, subjects
from agentry_common.events import RunRequested

from .. import metrics
from ..service import RunnerService
from ..settings import Settings

log = logging.getLogger(__name__)
asyncapi.consumes(
    subjects.RUN_REQUESTED, RunRequested, by="runner", stream=subjects.RUNS_STREAM, durable=subjects.RUNNER_CONSUMER,
    description="Runner replicas share the work queue; a run is acknowledged once its outcome is recorded and "
    "announced, and redelivered if its runner dies.",
)  # fmt: skip
FETCH_WAIT_S = 5.0
LAG_SAMPLE_S = 10.0


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.RUNNER_CONSUMER,
        description="Runner replicas pull run requests; explicit acks with in-progress heartbeats.",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.runner_ack_wait_s,
        max_deliver=-1,
        filter_subject=subjects.RUN_REQUESTED,
        max_ack_pending=-1,
    )


class RunConsumer:
    """Pull requests sized to the free slots, each run handed over the moment it arrives.

    A pull request asks for as many runs as the process has free slots (reserving them) and stays open until
    it has delivered that many or expires; every run it delivers starts executing at once, heartbeated, so no
    fetched run waits in a buffer. Under load one request serves many runs; idle, one request waits for the
    next run. (nats-py's `fetch(n)` returns only when the whole batch arrived, hence a loop of our own.)
    """

    def __init__(self, service: RunnerService, nc: Client, settings: Settings):
        self.service = service
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.free = settings.runner_concurrency  # slots neither running a run nor reserved by a pull request
        self.running: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._request_over = asyncio.Event()
        self._request = ""  # reply subject of the open pull request
        self._awaiting = 0  # runs it may still deliver
        self._inbox = ""
        self._requests = itertools.count()
        self._loop: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        await self.js.add_consumer(subjects.RUNS_STREAM.name, consumer_config(self.settings))
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_delivery)
        self._loop = asyncio.create_task(self._pull(), name="run-consumer")
        self._lag = asyncio.create_task(self._sample_lag(), name="run-consumer-lag")

    async def _sample_lag(self) -> None:
        """Runs waiting for a runner, for dashboards and alerts (KEDA reads the same numbers from NATS)."""
        while True:
            try:
                info = await self.js.consumer_info(subjects.RUNS_STREAM.name, subjects.RUNNER_CONSUMER)
            except Exception as err:
                log.debug("consumer info unavailable: %s", type(err).__name__)
            else:
                metrics.CONSUMER_PENDING.set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.set(info.num_ack_pending or 0)
            await asyncio.sleep(LAG_SAMPLE_S)

    async def _pull(self) -> None:
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.RUNS_STREAM.name}.{subjects.RUNNER_CONSUMER}"
        while True:
            while self.free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            batch, self.free = self.free, 0
            self._awaiting, self._request = batch, f"{self._inbox}.{next(self._requests)}"
            self._request_over.clear()
            request = orjson.dumps({"batch": batch, "expires": int(FETCH_WAIT_S * 1e9)})
            try:
                await self.nc.publish(next_subject, request, reply=self._request)
                # No answer at all (NATS restarting?): give up on this request and ask again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._request_over.wait(), timeout=FETCH_WAIT_S + 2)
            except ConnectionClosedError:
                return
            except Exception:
                log.warning("requesting runs failed; retrying", exc_info=True)
                await asyncio.sleep(1)
            finally:
                unfilled, self._awaiting, self._request = self._awaiting, 0, ""
                self._release(unfilled)

    async def _on_delivery(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:  # 408 expired, 409 consumer changed or limits: that request is over
            if msg.subject == self._request:  # (statuses come on the request's own reply subject)
                self._request_over.set()
            return
        # A run arrives under its own subject, so it cannot tell which request it answers; one beyond what the
        # open request reserved was asked for by a request given up on. Its ack timer runs: run it now.
        if self._awaiting > 0:
            self._awaiting -= 1
            if not self._awaiting:
                self._request_over.set()
        else:
            self.free -= 1
        task = asyncio.create_task(self._handle(msg))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def _release(self, slots: int) -> None:
        if slots:
            self.free += slots
            self._slot_freed.set()

    async def _handle(self, msg: Msg) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            try:
                event = RunRequested.model_validate_json(msg.data)
            except ValidationError:
                log.error("dropping a run.requested that is not a RunRequested")
                await msg.term()
                return
            delivery = msg.metadata.num_delivered or 1
            try:
                await self.service.process(event, delivery)
            except asyncio.CancelledError:
                # Shutting down mid-run: hand the run back now rather than after ack_wait.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(msg.nak()), 1)
                raise
            except Exception:
                log.exception("run could not be finished; it will be redelivered", extra={"run_id": event.run_id})
                metrics.REDELIVERED.inc()
                await self._settle(msg.nak(delay=min(2.0**delivery, 30.0)))
                return
            await self._settle(msg.ack())
        finally:
            heartbeat.cancel()
            self._release(1)

    @staticmethod
    async def _settle(reply: Awaitable[None]) -> None:
        """Ack or nak. If the connection is gone, the run comes back after ack_wait, which is just as safe."""
        try:
            await reply
        except Exception:
            log.warning("could not ack or nak a run request", exc_info=True)

    async def _heartbeat(self, msg: Msg) -> None:
        """Tell JetStream the run is alive, well inside `ack_wait`, for as long as it runs."""
        interval = self.settings.runner_ack_wait_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except Exception:
                log.warning("in-progress ack failed", exc_info=True)

    async def stop(self) -> None:
        """Stop fetching; let in-flight runs finish within the grace period, hand the rest back."""
        if self._lag is not None:
            self._lag.cancel()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._sub is not None:
            # The open pull request stays on the server; without our interest in its inbox the server drops
            # it, instead of delivering a handed-back run straight to this departing process.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
                await self.nc.flush(timeout=2)
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=self.settings.runner_shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
                # The naks sit in the client's write buffer; the connection closes right after this.
                with contextlib.suppress(Exception):
                    await self.nc.flush(timeout=2)
