"""Billing benchmark (not a test): charges/s for a backlog of run.completed, batched vs one at a time.

Starts its own nats-server and PostgreSQL through `agentry_dev.stack` with fsync ON (PostgreSQL's
defaults; NATS with `sync_interval: always`), migrated, in a temporary folder. Then, twice — once with the
default batch size and once with one event per transaction — it preloads a backlog of `run.completed`
events while no billing process runs, starts one billing process, and times the backlog from the first
delivery to the moment every event is acknowledged, i.e. charged, its outcome event stored, and acked.
Each phase is checked: one charge per run, and every wallet reconciles with its ledger.
The last line is one JSON object with `charges_per_s` (batched) and `charges_per_s_single`.

    BENCH_EVENTS=20000 BENCH_SINGLE_EVENTS=20000 BENCH_BATCH=500 python bench/billing.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from agentry_billing.audit import check_wallets
from agentry_billing.repository import BillingRepository
from agentry_billing.service import credit_wallet
from agentry_common import subjects
from agentry_common.batch_publish import BatchPublisher
from agentry_common.broker import ensure_streams
from agentry_common.db import make_engine, make_sessionmaker
from agentry_common.events import RunCompleted, Usage
from agentry_common.requests import Deposit
from agentry_dev.stack import Stack, free_port

EVENTS = int(os.environ.get("BENCH_EVENTS", "20000"))
SINGLE_EVENTS = int(os.environ.get("BENCH_SINGLE_EVENTS", str(EVENTS)))
BATCH = int(os.environ.get("BENCH_BATCH", "500"))
OWNERS = 2000
DURABLE = "billing-bench"
STREAM = subjects.RUN_EVENTS_STREAM.name


async def fund_owners(database_url: str) -> list[str]:
    """2,000 wallets; one in ten gets too little, so both outcomes (collected, uncollected) are exercised."""
    owners = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(OWNERS)]
    engine = make_engine(database_url, pool_size=8)
    sessions = make_sessionmaker(engine)

    async def fund(owner: str) -> None:
        amount = 20 if random.random() < 0.1 else 100_000
        async with sessions() as session, session.begin():
            await credit_wallet(BillingRepository(session), Deposit(owner_id=owner, amount_cents=amount,
                                                                    idempotency_key="bench"))  # fmt: skip

    for i in range(0, OWNERS, 100):
        await asyncio.gather(*(fund(o) for o in owners[i : i + 100]))
    await engine.dispose()
    return owners


async def preload(publisher: BatchPublisher, owners: list[str], count: int) -> tuple[list[str], float]:
    """Publish the backlog; returns its run ids and the rate JetStream stored it at (messages/s)."""
    run_ids, messages = [], []
    for _ in range(count):
        event = RunCompleted(
            run_id=f"run_{uuid.uuid4().hex}",
            endpoint_id="aep_bench",
            owner_id=random.choice(owners),
            price_per_run_cents=random.randint(1, 50),
            usage=Usage(tokens_input=1200, tokens_output=180, cost_cents=0.34, latency_ms=2891, iterations=2),
        )
        run_ids.append(event.run_id)
        messages.append((subjects.RUN_COMPLETED, event.model_dump_json().encode(), event.msg_id()))
    started = time.perf_counter()
    for start in range(0, count, 500):
        await publisher.publish(messages[start : start + 500])
    return run_ids, count / (time.perf_counter() - started)


async def time_backlog(js: JetStreamContext, first_seq: int, last_seq: int) -> float:
    """Seconds from the first delivery of the backlog (stream sequences first..last) to the moment every one
    of its events is acknowledged; consumer state sampled every 5 ms."""
    started = None
    while True:
        try:
            info = await js.consumer_info(STREAM, DURABLE)
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.005)
            continue
        now = time.perf_counter()
        if started is None and info.delivered.stream_seq >= first_seq:
            started = now
        if started is not None and info.ack_floor.stream_seq >= last_seq and not info.num_ack_pending:
            return now - started
        await asyncio.sleep(0.005)


async def phase(
    stack: Stack, js: JetStreamContext, publisher: BatchPublisher, owners: list[str], count: int, batch: int
) -> dict[str, Any]:
    first_seq = int((await js.stream_info(STREAM)).state.last_seq) + 1
    run_ids, stored_per_s = await preload(publisher, owners, count)
    last_seq = int((await js.stream_info(STREAM)).state.last_seq)
    timer = asyncio.create_task(time_backlog(js, first_seq, last_seq))
    service = await asyncio.to_thread(stack.start_service, "billing", CHARGE_CONSUMER=DURABLE,
                                      CHARGE_BATCH_SIZE=str(batch), LOG_LEVEL="WARNING")  # fmt: skip
    seconds = await asyncio.wait_for(timer, timeout=1800)
    charging = await _charging_seconds(service.url)
    await asyncio.to_thread(service.stop)
    stack.services.remove(service)

    engine = make_engine(stack.database_url, pool_size=2)
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT count(*) AS charges, count(DISTINCT run_id) AS runs,"
            " count(*) FILTER (WHERE status = 'collected') AS collected FROM billing.charges"
            " WHERE run_id = ANY(:ids)"), {"ids": run_ids})).one()  # fmt: skip
        drifting = [c for c in await check_wallets(conn, owners) if c.problems]
    await engine.dispose()
    assert row.charges == row.runs == count, f"{row.charges} charges for {count} runs"
    assert not drifting, f"{len(drifting)} wallets drift from their ledger"
    return {"events": count, "batch": batch, "seconds": seconds, "per_s": count / seconds,
            "charging_share": charging / seconds, "stored_per_s": stored_per_s, "collected": row.collected,
            "uncollected": count - row.collected}  # fmt: skip


async def _charging_seconds(url: str) -> float:
    """Time billing spent charging (each batch from its arrival to its commit, summed), from its own metrics;
    the rest of the wall time its batches waited for their outcomes to be stored by JetStream."""
    async with httpx.AsyncClient() as client:
        text_ = (await client.get(f"{url}/metrics")).text
    for family in text_string_to_metric_families(text_):
        for sample in family.samples:
            if sample.name == "agentry_billing_charge_batch_seconds_sum":
                return float(sample.value)
    return 0.0


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentry-bench-billing-") as tmp:
        stack = Stack(
            Path(tmp),
            nats_port=free_port(),
            pg_port=free_port(),
            fast_pg=False,
            echo=bool(os.environ.get("BENCH_ECHO")),
        )
        stack.nats_url = stack.database_url = ""  # always its own servers: fsync on, nothing else running
        try:
            await asyncio.to_thread(stack.start_servers)
            await asyncio.to_thread(stack.migrate)
            owners = await fund_owners(stack.database_url)
            nc = await nats.connect(stack.nats_url)
            js = nc.jetstream()
            await ensure_streams(js)
            publisher = BatchPublisher()
            await publisher.start(nc)
            batched = await phase(stack, js, publisher, owners, EVENTS, BATCH)
            single = await phase(stack, js, publisher, owners, SINGLE_EVENTS, 1)
            await nc.close()
        finally:
            await asyncio.to_thread(stack.stop)

    print(f"billing: a backlog of run.completed, fsync on, {OWNERS} wallets, one billing process")
    print(f"{'mode':<16}{'events':>8}{'batch':>7}{'seconds':>10}{'charges/s':>11}{'charging':>10}"
          f"{'collected':>11}{'uncollected':>13}")  # fmt: skip
    for name, r in (("batched", batched), ("one at a time", single)):
        print(f"{name:<16}{r['events']:>8}{r['batch']:>7}{r['seconds']:>10.2f}{r['per_s']:>11.0f}"
              f"{r['charging_share']:>10.0%}{r['collected']:>11}{r['uncollected']:>13}")  # fmt: skip
    print("charging: share of the wall time spent fetching and charging (the rest: waiting for outcomes to be stored")
    print("          and events acknowledged);")
    stage = batched["per_s"] / batched["charging_share"]
    print(f"          the batched charging stage alone ran at {stage:.0f} charges/s")
    print(f"for scale: just before the batched run, JetStream stored the backlog one message per fsync at "
          f"{batched['stored_per_s']:.0f} msgs/s;")  # fmt: skip
    print("billing stores each batch's outcomes as JetStream atomic batches instead, one fsync per batch.")
    result = {
        "bench": "billing",
        "events": EVENTS,
        "batch_size": BATCH,
        "fsync": True,
        "charges_per_s": round(batched["per_s"], 1),
        "charges_per_s_single": round(single["per_s"], 1),
        "speedup": round(batched["per_s"] / single["per_s"], 1),
        "seconds": round(batched["seconds"], 3),
        "seconds_single": round(single["seconds"], 3),
        "single_events": SINGLE_EVENTS,
        "jetstream_stored_per_s": round(batched["stored_per_s"], 1),
        "charging_stage_per_s": round(stage, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
