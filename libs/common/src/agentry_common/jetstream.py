"""JetStream pull consumption, written once: a worker on a durable pull consumer that fetches only as many
messages as it has free slots, hands them to a handler (one at a time or in batches), settles each with the
handler's verdict (ack, nak after a delay, term), heartbeats long handlers, and samples the consumer's lag.

Why a pull request of our own rather than nats-py's `PullSubscription.fetch` or a FastStream subscriber:
- `fetch(n)` returns only once all `n` arrived (or its timeout), so a runner asking for its free slots would
  hold the first run until the last came; the runner instead asks for every free slot in one request and
  starts each run the moment it arrives. It replaced a `fetch(1)` per run (a pull request, a future and a
  timeout in the client, a waiting request in the server for every run): docs/benchmarks.md, runner item 8.
- `fetch` awaits each message of a batch with a timeout task of its own; at thousands of charges per second
  that per-message cost was most of billing's CPU. Here one callback subscription receives the whole batch,
  so a message costs a list append (docs/benchmarks.md: 7,500 to 7,800 charges/s batched with fsync on).
- FastStream's subscribers take pushed messages (buffered in the client) or `fetch` batches handled one after
  the other; neither sizes its pull to the free slots, and a message fetched without a free slot waits with its
  ack timer running and no heartbeat, to be redelivered elsewhere while it waits.
So the pull request protocol (`$JS.API.CONSUMER.MSG.NEXT`) is spelled here and nowhere else: `next_subject`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import APIError
from prometheus_client import Gauge

log = logging.getLogger(__name__)


def next_subject(stream: str, durable: str) -> str:
    """The subject a pull request for `durable` on `stream` is published to (JetStream's wire protocol)."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


@dataclass(frozen=True)
class Ack:
    """Done: the message is not delivered again."""


@dataclass(frozen=True)
class Nak:
    """Not done, retry: delivered again after `delay` seconds (at once with None), to any replica."""

    delay: float | None = None


@dataclass(frozen=True)
class Term:
    """Never done (an unreadable message): not delivered again. The handler logs why."""


Verdict = Ack | Nak | Term
ACK, TERM = Ack(), Term()
# Gets the messages of one hand-over and returns one verdict per message, in order. A handler that raises
# leaves its messages unsettled: JetStream delivers them again after the consumer's ack wait.
Handler = Callable[[list[Msg]], Awaitable[Sequence[Verdict]]]


@dataclass(frozen=True)
class LagGauges:
    """Where the consumer's lag goes, each service under its own metric names (dashboards and alerts read them;
    KEDA reads the same numbers from NATS)."""

    pending: Gauge  # not yet delivered
    ack_pending: Gauge  # delivered, not yet settled
    redelivered: Gauge | None = None
    every_s: float = 10.0


class PullWorker:
    """A durable pull consumer's worker with `capacity` slots: a message holds a slot from its delivery until
    it is settled. A pull request asks for every free slot once at least `batch` are free, and stays open until
    it delivered that many or `wait_s` passed; what it delivers goes to the handler in hand-overs of up to
    `batch` messages — with `batch=1` each message the moment it arrives — each hand-over a task of its own, so
    the handler decides what may run side by side. With `heartbeat_s`, a hand-over's messages are kept alive
    (`+WPI`) while its handler runs.

    With `gather`, no request waits open: every `wait_s` the worker asks for what is pending (`no_wait`) and
    gets it in one burst, and asks again at once while a request comes back full. For a consumer that hands
    over batches anyway (billing), that is one wake-up per interval instead of one per message as they trickle
    in; a message waits at most `wait_s` either way.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        config: ConsumerConfig,
        handler: Handler,
        *,
        capacity: int,
        batch: int = 1,
        wait_s: float = 5.0,
        heartbeat_s: float | None = None,
        lag: LagGauges | None = None,
        gather: bool = False,
    ):
        assert config.durable_name, "a pull worker needs a durable consumer"
        assert 1 <= batch <= capacity
        self.nc, self.stream, self.config, self.handler = nc, stream, config, handler
        self.durable: str = config.durable_name
        self.js: JetStreamContext = nc.jetstream()
        self.capacity, self.batch, self.wait_s = capacity, batch, wait_s
        self.heartbeat_s, self.lag, self.gather = heartbeat_s, lag, gather
        self.free = capacity  # slots neither holding a message nor reserved by the open pull request
        self.running: set[asyncio.Task[None]] = set()
        self._buffer: list[Msg] = []  # delivered, not yet handed over (batch > 1)
        self._slot_freed = asyncio.Event()
        self._request_over = asyncio.Event()
        self._request = ""  # reply subject of the open pull request
        self._awaiting = 0  # messages it may still deliver
        self._inbox = ""
        self._requests = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Create or update the durable (every replica may), then pull."""
        try:
            await self.js.add_consumer(self.stream, self.config)
        except APIError as err:
            # A durable set up by an operator with settings that cannot be updated in place: use it as it is.
            await self.js.consumer_info(self.stream, self.durable)
            log.warning("using the existing consumer as configured: %s", err.description)
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_delivery)
        self._tasks = [asyncio.create_task(self._pull(), name=f"pull-{self.durable}")]
        if self.lag is not None:
            self._tasks.append(asyncio.create_task(self._sample_lag(self.lag), name=f"lag-{self.durable}"))

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop pulling; let the hand-overs under way finish (within `grace_s`, if given; the rest are cancelled,
        which hands their messages back at once)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None:
            # The open pull request stays on the server; without our interest in its inbox the server drops
            # it, instead of delivering a handed-back message straight to this departing process.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
                await self.nc.flush(timeout=2)
            self._sub = None
        self._hand_over()  # delivered before the unsubscribe: handled here rather than left to time out
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
                # The naks sit in the client's write buffer; the connection may close right after this.
                with contextlib.suppress(Exception):
                    await self.nc.flush(timeout=2)

    async def _pull(self) -> None:
        subject = next_subject(self.stream, self.durable)
        expires = int(self.wait_s * 1e9)
        while True:
            while self.free < self.batch:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            want, self.free = self.free, 0
            self._awaiting, self._request = want, f"{self._inbox}.{next(self._requests)}"
            self._request_over.clear()
            ask = {"batch": want, "no_wait": True} if self.gather else {"batch": want, "expires": expires}
            unfilled = 0
            try:
                await self.nc.publish(subject, orjson.dumps(ask), reply=self._request)
                # No answer at all (NATS restarting?): give up on this request and ask again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._request_over.wait(), timeout=self.wait_s + 2)
            except ConnectionClosedError:
                return
            except Exception:
                log.warning("pulling from %s failed; retrying", self.durable, exc_info=True)
                await asyncio.sleep(1)
            finally:
                unfilled, self._awaiting, self._request = self._awaiting, 0, ""
                self._release(unfilled)
                self._hand_over()
            if self.gather and unfilled:  # the stream had no more: gather what comes in the next interval
                await asyncio.sleep(self.wait_s)

    async def _on_delivery(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:  # 408 expired, 409 consumer changed or limits, 404 nothing: that request is over
            if status != "100" and msg.subject == self._request:  # (statuses come on the request's own subject)
                self._request_over.set()
            return
        # A message arrives under its own subject, so it cannot tell which request it answers; one beyond what
        # the open request reserved was asked for by a request given up on. Its ack timer runs: hand it over now.
        self._buffer.append(msg)
        if self._awaiting > 0:
            self._awaiting -= 1
            if not self._awaiting:
                self._request_over.set()
            if len(self._buffer) >= self.batch:
                self._hand_over()
        else:
            self.free -= 1
            self._hand_over()

    def _hand_over(self) -> None:
        while self._buffer:
            msgs, self._buffer = self._buffer[: self.batch], self._buffer[self.batch :]
            task = asyncio.create_task(self._handle(msgs))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    def _release(self, slots: int) -> None:
        if slots:
            self.free += slots
            self._slot_freed.set()

    async def _handle(self, msgs: list[Msg]) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(msgs, self.heartbeat_s)) if self.heartbeat_s else None
        try:
            try:
                verdicts = await self.handler(msgs)
            except asyncio.CancelledError:
                # Shutting down mid-handler: hand the messages back now rather than after the ack wait.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._settle(msgs, [Nak()] * len(msgs))), 1)
                raise
            except Exception:
                log.exception("handling %d message(s) of %s failed; redelivered after the ack wait",
                              len(msgs), self.durable)  # fmt: skip
                return
            await self._settle(msgs, verdicts)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            self._release(len(msgs))

    async def _settle(self, msgs: Sequence[Msg], verdicts: Sequence[Verdict]) -> None:
        """Ack, nak or term each. If the connection is gone, the messages come back after the ack wait, which is
        just as safe (handlers are idempotent per message)."""
        assert len(msgs) == len(verdicts), "one verdict per message"
        failed = 0
        for msg, verdict in zip(msgs, verdicts, strict=True):
            try:
                if isinstance(verdict, Ack):
                    await msg.ack()
                elif isinstance(verdict, Nak):
                    await msg.nak(delay=verdict.delay)
                else:
                    await msg.term()
            except Exception:
                failed += 1
        if failed:
            log.warning("could not settle %d of %d message(s) of %s", failed, len(msgs), self.durable)

    @staticmethod
    async def _heartbeat(msgs: Sequence[Msg], interval: float) -> None:
        """Tell JetStream the messages are being worked on, well inside the ack wait, for as long as it takes."""
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                try:
                    await msg.in_progress()
                except Exception:
                    log.warning("in-progress ack failed", exc_info=True)

    async def _sample_lag(self, gauges: LagGauges) -> None:
        while True:
            try:
                info = await self.js.consumer_info(self.stream, self.durable)
            except Exception as err:
                log.debug("consumer info unavailable: %s", type(err).__name__)
            else:
                gauges.pending.set(info.num_pending or 0)
                gauges.ack_pending.set(info.num_ack_pending or 0)
                if gauges.redelivered is not None:
                    gauges.redelivered.set(info.num_redelivered or 0)
            await asyncio.sleep(gauges.every_s)
