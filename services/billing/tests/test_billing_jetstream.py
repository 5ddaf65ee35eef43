"""The batch publisher on a real nats-server with `sync_interval: always`: atomic batches store every message
exactly once, and a batch JetStream refuses whole is stored message by message instead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from agentry_common import subjects
from agentry_common.batch_publish import MAX_ATOMIC, BatchPublisher
from agentry_common.broker import ensure_streams


@pytest.fixture
async def stream(nc: Client) -> AsyncIterator[tuple[JetStreamContext, str]]:
    js = nc.jetstream()
    name = f"ATOMIC_TEST_{uuid.uuid4().hex[:8].upper()}"
    yield js, name
    await js.delete_stream(name)


async def make_stream(js: JetStreamContext, name: str, atomic: bool) -> str:
    prefix = f"test.{name.lower()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"], allow_atomic=atomic or None,
                                     duplicate_window=120))  # fmt: skip
    return prefix


def messages(prefix: str, ids: range) -> list[tuple[str, bytes, str]]:
    # Two subjects of one stream in one batch, as billing's collected/uncollected outcomes are.
    return [(f"{prefix}.{'a' if i % 3 else 'b'}", f"m{i}".encode(), f"id-{i}") for i in ids]


async def stored(js: JetStreamContext, name: str) -> list[bytes]:
    info = await js.stream_info(name)
    return [(await js.get_msg(name, seq)).data or b"" for seq in range(1, info.state.last_seq + 1)]


async def test_a_batch_larger_than_one_atomic_batch_is_stored_whole_in_order(nc: Client, stream) -> None:
    js, name = stream
    prefix = await make_stream(js, name, atomic=True)
    publisher = BatchPublisher(atomic=True)
    await publisher.start(nc)
    batch = messages(prefix, range(MAX_ATOMIC * 2 + 300))

    await publisher.publish(batch)

    assert await stored(js, name) == [payload for _, payload, _ in batch]
    assert publisher.atomic, "JetStream took the atomic batches"
    assert not publisher._batches, "nothing is left waiting for an ack"


async def test_a_batch_repeating_stored_messages_stores_only_the_new_ones_once(nc: Client, stream) -> None:
    """A redelivered event re-announces its outcome: the atomic batch is refused for the duplicate id and
    published message by message, where de-duplication drops what the stream already holds."""
    js, name = stream
    prefix = await make_stream(js, name, atomic=True)
    publisher = BatchPublisher(atomic=True)
    await publisher.start(nc)
    await publisher.publish(messages(prefix, range(0, 10)))

    await publisher.publish(messages(prefix, range(5, 25)))

    assert await stored(js, name) == [f"m{i}".encode() for i in range(25)]
    assert publisher.atomic, "a refused batch does not turn atomic publishing off"


async def test_a_stream_without_atomic_publishes_gets_every_message_and_no_more_atomic_tries(
    nc: Client, stream
) -> None:
    js, name = stream
    prefix = await make_stream(js, name, atomic=False)  # e.g. a stream an operator made
    publisher = BatchPublisher(atomic=True)
    await publisher.start(nc)

    await publisher.publish(messages(prefix, range(0, 30)))
    assert not publisher.atomic
    await publisher.publish(messages(prefix, range(30, 40)))

    assert await stored(js, name) == [f"m{i}".encode() for i in range(40)]


async def test_billing_events_allow_atomic_batches(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js)  # as every service does at startup; an existing stream is updated to allow them
    assert (await js.stream_info(subjects.BILLING_EVENTS_STREAM.name)).config.allow_atomic
