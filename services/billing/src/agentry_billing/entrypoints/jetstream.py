"""JetStream plumbing for batches: pull a batch with one request, publish a batch and wait for every ack.

nats-py's `PullSubscription.fetch` awaits each message of a batch with its own timeout task and
`publish_async` gives each message a future and a semaphore wait; at thousands of charges per second that
per-message overhead was most of billing's CPU. Here one callback subscription receives a whole batch (or
all the acks of a batch) and counts, so the cost per message is a list append.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# Status replies that end a pull request: 404 no messages, 408 request expired, 409 consumer limits.
_HEARTBEAT = "100"


class PublishFailed(Exception):
    """JetStream did not store every message of a batch (error reply, no stream, or no answer in time)."""


class BatchPuller:
    """Pulls batches from a durable pull consumer. One outstanding pull request at a time; it ends when the
    batch is full or the server says there is nothing more before `expires`."""

    def __init__(self, nc: Client, stream: str, consumer: str):
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._msgs: list[Msg] = []
        self._wanted = 0
        self._done = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> list[Msg]:
        """Stop receiving; returns messages delivered but not yet handed out (the caller releases them)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        msgs, self._msgs = self._msgs, []
        return msgs

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:
            if status != _HEARTBEAT:
                self._done.set()
            return
        self._msgs.append(msg)
        if len(self._msgs) >= self._wanted:
            self._done.set()

    async def fetch(self, batch: int, wait_s: float) -> list[Msg]:
        """Up to `batch` messages: at once if there is a backlog, else whatever arrives within `wait_s`."""
        if not self._msgs:  # a late delivery of an earlier request is handed out first
            self._wanted = batch
            self._done.clear()
            request = {"batch": batch, "expires": int(wait_s * 1e9)}
            await self._nc.publish(self._next, orjson.dumps(request), reply=self._inbox)
            # No answer at all (reconnecting?): give up on this request; late deliveries are kept for the next.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=wait_s + 2)
        msgs, self._msgs = self._msgs[:batch], self._msgs[batch:]
        return msgs


@dataclass
class _Batch:
    size: int
    acked: int = 0
    failed: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BatchPublisher:
    """Publishes batches of messages to JetStream and returns once every one is stored."""

    def __init__(self) -> None:
        self._nc: Client | None = None
        self._prefix = ""
        self._ids = itertools.count()
        self._batches: dict[str, _Batch] = {}
        self._starting = asyncio.Lock()

    async def start(self, nc: Client) -> None:
        """Subscribe to the acks; idempotent, so a request handler may call it before the app's startup hook."""
        async with self._starting:
            if self._nc is not None:
                return
            prefix = nc.new_inbox()
            await nc.subscribe(f"{prefix}.*", cb=self._on_ack)
            self._prefix, self._nc = prefix, nc

    async def _on_ack(self, msg: Msg) -> None:
        batch = self._batches.get(msg.subject[len(self._prefix) + 1 :])
        if batch is None:
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None or b'"error"' in msg.data:  # 503: no stream listens; else an API error
            batch.failed += 1
        batch.acked += 1
        if batch.acked >= batch.size:
            batch.done.set()

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float = 30.0) -> None:
        """Publish `(subject, payload, Nats-Msg-Id)` triples; raise `PublishFailed` unless all are stored."""
        if not messages:
            return
        if self._nc is None:
            raise PublishFailed("the publisher is not connected")
        key = str(next(self._ids))
        batch = self._batches[key] = _Batch(len(messages))
        reply = f"{self._prefix}.{key}"
        try:
            for subject, payload, msg_id in messages:
                await self._nc.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id})
            try:
                await asyncio.wait_for(batch.done.wait(), timeout=timeout)
            except TimeoutError as err:
                raise PublishFailed(f"{batch.size - batch.acked} of {batch.size} not acknowledged in time") from err
            if batch.failed:
                raise PublishFailed(f"{batch.failed} of {batch.size} refused by JetStream")
        finally:
            del self._batches[key]
