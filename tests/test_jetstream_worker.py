"""The JetStream pull worker billing and the runner share (`agentry_common.jetstream`), on a real nats-server:
it holds no more messages than it has slots (the rest wait in the stream for another replica), settles each
message as its handler says (nak after a delay, term a poison message), keeps a slow handler's messages alive,
and hands a message back at once when it stops mid-handler."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StreamConfig

from agentry_common.jetstream import ACK, TERM, Nak, PullWorker, Verdict


@dataclass
class Stream:
    js: JetStreamContext
    name: str
    subject: str
    workers: list[PullWorker] = field(default_factory=list)

    def config(self, ack_wait: float = 30) -> ConsumerConfig:
        return ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=-1)

    async def publish(self, *payloads: bytes) -> list[int]:
        return [(await self.js.publish(self.subject, p)).seq for p in payloads]

    async def info(self) -> ConsumerInfo:
        return await self.js.consumer_info(self.name, "worker")

    async def worker(self, nc: Client, handler: Callable[[list[Msg]], Awaitable[Sequence[Verdict]]],
                     ack_wait: float = 30, **options: float) -> PullWorker:  # fmt: skip
        worker = PullWorker(nc, self.name, self.config(ack_wait), handler, **options)  # type: ignore[arg-type]
        await worker.start()
        self.workers.append(worker)
        return worker


@pytest.fixture
async def stream(nc: Client) -> AsyncIterator[Stream]:
    js = nc.jetstream()
    name = f"WORKER_TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"test.{name.lower()}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    s = Stream(js, name, subject)
    yield s
    for worker in s.workers:
        await worker.stop(grace_s=0)
    await js.delete_stream(name)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_worker_holds_no_more_messages_than_its_free_slots(nc: Client, stream: Stream) -> None:
    release = asyncio.Event()
    handling: list[bytes] = []

    async def slow(msgs: list[Msg]) -> list[Verdict]:
        handling.extend(m.data for m in msgs)
        await release.wait()
        return [ACK] * len(msgs)

    await stream.publish(*(f"m{i}".encode() for i in range(10)))
    await stream.worker(nc, slow, capacity=3)

    async def three_taken() -> bool:
        return len(handling) == 3

    await eventually(three_taken)
    await asyncio.sleep(0.5)  # a worker that over-fetched would have been delivered more by now

    info = await stream.info()
    assert (info.num_ack_pending, info.num_pending) == (3, 7)  # the rest wait in the stream for anyone free
    assert len(handling) == 3
    release.set()
    await eventually(lambda: _idle(stream))
    assert sorted(handling) == sorted(f"m{i}".encode() for i in range(10))  # each handled once


async def _idle(stream: Stream) -> bool:
    info = await stream.info()
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_batches_never_exceed_the_batch_size_and_each_message_is_handed_over_once(
    nc: Client, stream: Stream
) -> None:
    batches: list[list[bytes]] = []

    async def record(msgs: list[Msg]) -> list[Verdict]:
        batches.append([m.data for m in msgs])
        return [ACK] * len(msgs)

    payloads = [f"m{i}".encode() for i in range(23)]
    await stream.publish(*payloads)
    await stream.worker(nc, record, capacity=10, batch=5, wait_s=0.5)
    await eventually(lambda: _idle(stream))

    assert all(1 <= len(b) <= 5 for b in batches)
    assert sorted(p for b in batches for p in b) == sorted(payloads)


async def test_a_nak_redelivers_after_its_delay_and_a_term_never(nc: Client, stream: Stream) -> None:
    deliveries: dict[bytes, list[float]] = {}
    loop = asyncio.get_running_loop()

    async def handler(msgs: list[Msg]) -> list[Verdict]:
        [msg] = msgs
        deliveries.setdefault(msg.data, []).append(loop.time())
        if msg.data == b"poison":
            return [TERM]
        return [Nak(delay=1.0)] if msg.metadata.num_delivered == 1 else [ACK]

    _, retried = await stream.publish(b"poison", b"retried")
    await stream.worker(nc, handler, ack_wait=2, capacity=4)
    await eventually(lambda: _idle(stream))

    first, second = deliveries[b"retried"]
    assert second - first >= 1.0  # not before the nak's delay
    info = await stream.info()
    assert info.ack_floor.stream_seq == retried  # both settled: the poison one too, without an ack
    assert len(deliveries[b"poison"]) == 1
    await asyncio.sleep(2.5)  # past the ack wait: a poison message left unsettled would be back by now
    assert len(deliveries[b"poison"]) == 1


async def test_a_handler_slower_than_the_ack_wait_keeps_its_message_by_heartbeats(nc: Client, stream: Stream) -> None:
    delivered: list[int] = []

    async def slow(msgs: list[Msg]) -> list[Verdict]:
        delivered.append(msgs[0].metadata.num_delivered or 0)
        await asyncio.sleep(3.5)
        return [ACK]

    await stream.publish(b"long")
    await stream.worker(nc, slow, ack_wait=1, capacity=2, heartbeat_s=0.3)
    await eventually(lambda: _idle(stream), timeout=30)
    assert delivered == [1]  # never redelivered while it ran


async def test_a_worker_stopping_mid_handler_hands_its_message_back_at_once(nc: Client, stream: Stream) -> None:
    started, taken = asyncio.Event(), asyncio.Event()

    async def stuck(msgs: list[Msg]) -> list[Verdict]:
        started.set()
        await asyncio.Event().wait()
        return [ACK]

    async def takes(msgs: list[Msg]) -> list[Verdict]:
        taken.set()
        return [ACK]

    await stream.publish(b"run")
    first = await stream.worker(nc, stuck, ack_wait=60, capacity=1)  # far longer than the test waits
    await asyncio.wait_for(started.wait(), 20)
    await stream.worker(nc, takes, ack_wait=60, capacity=1)
    await first.stop(grace_s=0.1)
    await asyncio.wait_for(taken.wait(), 20)
    await eventually(lambda: _idle(stream))


async def test_a_worker_stopping_lets_the_handlers_under_way_finish_and_settle(nc: Client, stream: Stream) -> None:
    started = asyncio.Event()

    async def slow(msgs: list[Msg]) -> list[Verdict]:
        started.set()
        await asyncio.sleep(1.0)
        return [ACK] * len(msgs)

    [seq] = await stream.publish(b"charge")
    worker = await stream.worker(nc, slow, capacity=10, batch=5, wait_s=0.2)
    await asyncio.wait_for(started.wait(), 20)
    await worker.stop()  # as billing stops: no grace limit

    await nc.flush()
    info = await stream.info()
    assert info.ack_floor.stream_seq == seq and info.num_ack_pending == 0


async def test_a_gathering_worker_takes_what_arrived_once_per_interval_and_a_backlog_at_once(
    nc: Client, stream: Stream
) -> None:
    """Billing's mode: no pull request waits open (so no wake-up per message as runs finish one by one); each
    interval takes what arrived in one burst, and a request that comes back full is followed at once."""
    requests: list[bytes] = []

    async def note(msg: Msg) -> None:
        requests.append(msg.data)

    watcher = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream.name}.worker", cb=note)
    batches: list[list[bytes]] = []

    async def handle(msgs: list[Msg]) -> list[Verdict]:
        batches.append([m.data for m in msgs])
        return [ACK] * len(msgs)

    await stream.publish(*(f"b{i}".encode() for i in range(250)))  # a backlog beyond the worker's capacity
    await stream.worker(nc, handle, capacity=100, batch=50, wait_s=0.4, gather=True)

    async def all_handled() -> bool:
        return sum(len(b) for b in batches) == 250

    await eventually(all_handled)
    for i in range(12):  # then runs finishing one by one
        await stream.publish(f"t{i}".encode())
        await asyncio.sleep(0.05)

    async def trickle_handled() -> bool:
        return sum(len(b) for b in batches) == 262

    await eventually(trickle_handled)
    handled = [d for b in batches for d in b]
    assert sorted(handled) == sorted([f"b{i}".encode() for i in range(250)] + [f"t{i}".encode() for i in range(12)])
    assert len(batches) <= 5 + 6  # the backlog in batches of 50, the trickle gathered (~0.6 s of it in 0.4 s steps)
    assert requests and all(b'"no_wait":true' in r for r in requests)
    assert (await stream.info()).num_ack_pending == 0
    await watcher.unsubscribe()
