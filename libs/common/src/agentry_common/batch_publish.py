"""Publishing a batch of messages to JetStream and waiting for every ack, with one callback subscription.

nats-py's `publish_async` gives each message a future and a semaphore wait; at thousands of charges per second
that per-message overhead was most of billing's CPU. Here one subscription receives all the acks of a batch and
counts, so the cost per message is a counter increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """JetStream did not store every message of a batch (error reply, no stream, or no answer in time)."""


@dataclass
class _Batch:
    size: int
    acked: int = 0
    failed: int = 0
    errors: set[int] = field(default_factory=set)  # JetStream `err_code`s of refused messages
    done: asyncio.Event = field(default_factory=asyncio.Event)


MAX_ATOMIC = 1000  # the server's limit on the messages of one atomic batch
ERR_ATOMIC_NOT_ENABLED = 10174  # the stream does not allow atomic publishes (an operator-made stream?)


class BatchPublisher:
    """Publishes batches of messages to JetStream and returns once every one is stored.

    With `atomic`, a batch goes out as JetStream atomic batches (`Nats-Batch-Id`, ADR-50; the stream needs
    `allow_atomic`), which the server stores with one write and one fsync instead of one per message — with
    `sync_interval: always` that is the difference between ~5,000 and ~40,000 messages/s. An atomic batch is
    refused whole if one of its `Nats-Msg-Id`s is already stored (a redelivered event re-announcing its
    outcome); such a batch, or any other refused one, is published again message by message, where the
    stream's de-duplication drops what it already has.
    """

    def __init__(self, atomic: bool = False) -> None:
        self.atomic = atomic
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
        if status is not None:  # 503: no stream listens
            batch.failed += 1
        elif b'"error"' in msg.data:
            batch.failed += 1
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                batch.errors.add(int(orjson.loads(msg.data)["error"]["err_code"]))
        batch.acked += 1
        if batch.acked >= batch.size:
            batch.done.set()

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float = 30.0) -> None:
        """Publish `(subject, payload, Nats-Msg-Id)` triples; raise `PublishFailed` unless all are stored."""
        if not messages:
            return
        if self._nc is None:
            raise PublishFailed("the publisher is not connected")
        deadline = asyncio.get_running_loop().time() + timeout
        if not self.atomic or len(messages) == 1:
            await self._wait(await self._send(messages), deadline)
            return
        chunks = [messages[i : i + MAX_ATOMIC] for i in range(0, len(messages), MAX_ATOMIC)]
        sent: list[tuple[Sequence[tuple[str, bytes, str]], str]] = []
        refused = []
        try:
            for chunk in chunks:
                sent.append((chunk, await self._send_atomic(chunk)))
            for chunk, key in sent:
                batch = await self._wait(key, deadline, raise_refused=False)
                if batch.failed:
                    refused.append(chunk)
                    if ERR_ATOMIC_NOT_ENABLED in batch.errors and self.atomic:
                        self.atomic = False
                        log.warning("the stream does not allow atomic publishes: publishing message by message")
        finally:
            for _, key in sent:
                self._batches.pop(key, None)
        for chunk in refused:
            await self._wait(await self._send(chunk), deadline)

    def _open(self, size: int) -> str:
        key = str(next(self._ids))
        self._batches[key] = _Batch(size)
        return key

    async def _send(self, messages: Sequence[tuple[str, bytes, str]]) -> str:
        """Each message its own publish; every one is acknowledged."""
        assert self._nc is not None
        key = self._open(len(messages))
        reply = f"{self._prefix}.{key}"
        try:
            for subject, payload, msg_id in messages:
                await self._nc.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id})
        except BaseException:
            del self._batches[key]
            raise
        return key

    async def _send_atomic(self, messages: Sequence[tuple[str, bytes, str]]) -> str:
        """One atomic batch; only its committing (last) message is acknowledged."""
        assert self._nc is not None
        key = self._open(1)
        batch_id, last = secrets.token_hex(16), len(messages)
        try:
            for seq, (subject, payload, msg_id) in enumerate(messages, 1):
                headers = {"Nats-Msg-Id": msg_id, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq)}
                if seq == last:
                    headers["Nats-Batch-Commit"] = "1"
                reply = f"{self._prefix}.{key}" if seq == last else ""
                await self._nc.publish(subject, payload, reply=reply, headers=headers)
        except BaseException:
            del self._batches[key]
            raise
        return key

    async def _wait(self, key: str, deadline: float, raise_refused: bool = True) -> _Batch:
        batch = self._batches[key]
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(batch.done.wait(), timeout=max(remaining, 0.001))
            except TimeoutError as err:
                raise PublishFailed(f"{batch.size - batch.acked} of {batch.size} not acknowledged in time") from err
        finally:
            self._batches.pop(key, None)
        if batch.failed and raise_refused:
            raise PublishFailed(f"{batch.failed} of {batch.size} refused by JetStream")
        return batch
