"""Billing fixtures: replicas a test starts (and stops), a private durable consumer, events published with
nats-py, and probes that read the billing schema to check what really happened to the money.

Tests run in pytest's importlib mode and cannot import this module: helpers reach them as fixtures
(`events`, `ledger`, `uow`, `eventually`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry_billing.audit import WalletCheck, check_wallets
from agentry_billing.repository import BillingRepository
from agentry_billing.service import credit_wallet
from agentry_common import subjects
from agentry_common.broker import ensure_streams
from agentry_common.db import make_engine, make_sessionmaker
from agentry_common.events import Event, RunCompleted, Usage
from agentry_common.requests import Deposit
from agentry_dev.stack import Service, Stack

UnitOfWork = Callable[[], AbstractAsyncContextManager[BillingRepository]]
RUN_EVENTS = subjects.RUN_EVENTS_STREAM.name
BILLING_EVENTS = subjects.BILLING_EVENTS_STREAM.name


async def poll_until(probe: Callable[[], Awaitable[Any]], timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll until `probe` returns something truthy; return it (or the last falsy value on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


class Ledger:
    """Reads the billing schema directly: the ground truth the service's answers are checked against."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def charges(self, run_ids: Iterable[str]) -> dict[str, Any]:
        rows = await self.rows(
            "SELECT id, run_id, owner_id, amount_cents, cost_cents, status, settled_by FROM billing.charges "
            "WHERE run_id = ANY(:ids)",
            ids=list(run_ids),
        )
        return {r.run_id: r for r in rows}

    async def wait_for_charges(self, run_ids: Iterable[str], timeout: float = 60.0) -> dict[str, Any]:
        wanted = list(run_ids)

        async def probe() -> dict[str, Any] | None:
            found = await self.charges(wanted)
            return found if len(found) == len(wanted) else None

        found = await poll_until(probe, timeout)
        assert found is not None, f"not every run was charged within {timeout}s"
        return found  # type: ignore[no-any-return]

    async def wallet(self, owner_id: str) -> Any:
        rows = await self.rows("SELECT * FROM billing.wallets WHERE owner_id = :o", o=owner_id)
        return rows[0] if rows else None

    async def entries(self, owner_id: str) -> list[Any]:
        return await self.rows("SELECT * FROM billing.ledger_entries WHERE owner_id = :o ORDER BY entry_no", o=owner_id)

    async def drift(self, owners: Iterable[str]) -> list[WalletCheck]:
        async with self.engine.connect() as conn:
            checks = await check_wallets(conn, list(owners))
        return [c for c in checks if c.problems]


class RunEvents:
    """Publishes `run.completed` like a runner would (with nats-py) and reads what billing published back."""

    def __init__(self, js: JetStreamContext):
        self.js = js

    @staticmethod
    def completed(owner_id: str, price: int = 5, **fields: Any) -> RunCompleted:
        """A `run.completed` for a fresh run of `owner_id` (pass `run_id=` to announce an existing run)."""
        fields.setdefault("run_id", f"run_{uuid.uuid4().hex}")
        fields.setdefault("endpoint_id", "aep_billing_test")
        fields.setdefault("usage", Usage(tokens_input=10, tokens_output=5, cost_cents=0.25, iterations=1))
        return RunCompleted(owner_id=owner_id, price_per_run_cents=price, **fields)

    @staticmethod
    def replay(event: RunCompleted) -> RunCompleted:
        """The same run announced again: a new event id, the same run."""
        return event.model_copy(update={"id": f"evt_{uuid.uuid4().hex}"})

    async def publish(self, events: Iterable[Event], *, fresh_msg_id: bool = False) -> list[PubAck]:
        """Publish and wait until JetStream stored them. `fresh_msg_id` defeats the broker's de-duplication,
        so the copy reaches billing and only the database can tell it is a replay."""
        futures = []
        for event in events:
            msg_id = f"test-replay:{uuid.uuid4().hex}" if fresh_msg_id else event.msg_id()
            data = event.model_dump_json().encode()
            futures.append(await self.js.publish_async(event.type, data, headers={"Nats-Msg-Id": msg_id}))
        return list(await asyncio.gather(*futures))

    async def publish_raw(self, subject: str, data: bytes) -> None:
        await self.js.publish(subject, data, headers={"Nats-Msg-Id": f"test-raw:{uuid.uuid4().hex}"})

    async def quiescent(self, consumer: str, timeout: float = 90.0) -> None:
        """Wait until the consumer has nothing left to deliver and nothing delivered left unacknowledged."""

        async def idle() -> bool:
            info = await self.js.consumer_info(RUN_EVENTS, consumer)
            return info.num_pending == 0 and info.num_ack_pending == 0

        assert await poll_until(idle, timeout, every=0.25), f"consumer {consumer} still busy after {timeout}s"

    async def next_outcome_seq(self) -> int:
        """The stream sequence the next `billing.charge.*` event will get: read outcomes from there on."""
        return int((await self.js.stream_info(BILLING_EVENTS)).state.last_seq) + 1

    async def outcomes(self, charge_ids: Iterable[str], from_seq: int) -> dict[str, list[Any]]:
        """`billing.charge.*` events stored from `from_seq` on for these charges, by charge id."""
        wanted, found = set(charge_ids), {}  # type: ignore[var-annotated]
        last = int((await self.js.stream_info(BILLING_EVENTS)).state.last_seq)
        if last < from_seq:
            return found
        sub = await self.js.subscribe(
            "billing.>",  # every event, so the stream's last one (maybe a deposit's) is seen and ends the read
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=5)
                body = orjson.loads(msg.data)
                if body.get("charge_id") in wanted:
                    found.setdefault(body["charge_id"], []).append(body)
                if msg.metadata.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
        return found


@pytest.fixture(scope="session")
async def billing_engine(servers: Stack) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(servers.database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
def ledger(billing_engine: AsyncEngine) -> Ledger:
    return Ledger(billing_engine)


@pytest.fixture
def new_owner() -> Callable[[], str]:
    """Fresh owner ids, so each test has wallets of its own on the shared database."""
    return lambda: f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fund(uow: UnitOfWork) -> Callable[[str, int], Awaitable[None]]:
    """Credit a wallet in-process (as a deposit would), before any billing process is involved."""

    async def _fund(owner_id: str, amount_cents: int) -> None:
        async with uow() as repo:
            cmd = Deposit(owner_id=owner_id, amount_cents=amount_cents, idempotency_key=f"fund-{uuid.uuid4().hex}")
            await credit_wallet(repo, cmd)

    return _fund


@pytest.fixture
def uow(billing_engine: AsyncEngine) -> UnitOfWork:
    """In-process unit of work on the test database, as the service's entrypoints open it."""
    sessions = make_sessionmaker(billing_engine)

    @asynccontextmanager
    async def _uow() -> AsyncIterator[BillingRepository]:
        async with sessions() as session, session.begin():
            yield BillingRepository(session)

    return _uow


class Replicas:
    """Billing processes started by tests; stopped (and forgotten) at the end of their scope, so the shared
    `stack` fixture never mistakes one of them for its own billing service."""

    def __init__(self, servers: Stack):
        self.servers = servers
        self.started: list[Service] = []

    def start(self, *, wait: bool = True, **env: str) -> Service:
        service = self.servers.start_service("billing", wait=wait, **env)
        self.started.append(service)
        return service

    def start_together(self, count: int, **env: str) -> list[Service]:
        """`count` replicas started at once, then awaited: their imports overlap rather than queue."""
        services = [self.start(wait=False, **env) for _ in range(count)]
        for service in services:
            service.wait_ready()
        return services

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()
            if service in self.servers.services:
                self.servers.services.remove(service)


@pytest.fixture
def start_billing(servers: Stack) -> Iterator[Callable[..., Service]]:
    """Start billing replicas for this test only (e.g. to kill one, or with their own settings)."""
    replicas = Replicas(servers)
    yield replicas.start
    replicas.stop_all()


@pytest.fixture(scope="module")
def billing_replicas(servers: Stack) -> Iterator[list[Service]]:
    """Two billing replicas on the shared durable consumer, for a whole test module (starting a process is
    the slow part of these tests)."""
    replicas = Replicas(servers)
    try:
        yield replicas.start_together(2, CHARGE_BATCH_SIZE="20")
    finally:
        replicas.stop_all()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    """JetStream, with the streams declared (as any service does at startup) so a test may publish first."""
    context = nc.jetstream()
    await ensure_streams(context)
    return context


@pytest.fixture
def events(js: JetStreamContext) -> RunEvents:
    return RunEvents(js)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """`await eventually(probe, timeout)`: poll until `probe()` is truthy and return its value."""
    return poll_until


@pytest.fixture
async def private_consumer(js: JetStreamContext) -> AsyncIterator[str]:
    """A durable consumer of only the `run.completed` published from now on, for replicas this test owns
    alone (`CHARGE_CONSUMER=<it>`). Short ack wait: a killed replica's batch comes back within seconds."""
    name = f"billing-test-{uuid.uuid4().hex[:8]}"
    info = await js.stream_info(RUN_EVENTS)
    await js.add_consumer(
        RUN_EVENTS,
        ConsumerConfig(
            durable_name=name,
            filter_subject=subjects.RUN_COMPLETED,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=info.state.last_seq + 1,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=3,
            max_deliver=-1,
            max_ack_pending=20_000,
        ),
    )
    yield name
    await js.delete_consumer(RUN_EVENTS, name)
