"""Rate-limit benchmark (not a test): limiter decisions/s and the latency it adds, one and three replicas.

Starts its own nats-server (or uses NATS_URL). Part 1 measures the designs issue #6 asked to choose between,
on 200 concurrent decisions for one hot key from three connections: a sliding-window log (what the gateway
uses), GCRA in a KV bucket with compare-and-set, and a counter stream (`Nats-Incr`) per fixed window.
Part 2 runs the gateway's own limiter (`agentry_gateway.ratelimit.Limits`) in one and in three processes.
The last line is one JSON object; `limiter_decisions_per_s` / `limiter_p99_ms` are three replicas, API-key runs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from agentry_common.errors import RateLimited
from agentry_dev.stack import Nats, free_port
from agentry_gateway.ratelimit import Limits

LIMIT, HOT = 60, 200
TOTAL = int(os.environ.get("BENCH_DECISIONS", "6000"))  # per scenario, split over the replicas
CONCURRENCY = 32  # in flight per replica, like a busy gateway process


# --- part 1: the candidate designs ---------------------------------------------------------------------


async def _sliding_log(js: Any, key: str) -> tuple[bool, int]:
    try:
        await js.publish(f"bench_sl.{key}", b"")
        return True, 1
    except APIError as err:
        if "maximum messages per subject" in (err.description or ""):
            return False, 1
        raise


async def _gcra(kv: Any, key: str) -> tuple[bool, int]:
    """Burst 60, one slot back per second; every write is a compare-and-set on the revision read."""
    trips = 0
    while True:
        now = time.time()
        trips += 1
        try:
            entry = await kv.get(key)
            tat, revision = float(entry.value), entry.revision
        except KeyNotFoundError:
            tat, revision = now, None
        tat = max(tat, now)
        if tat - now > LIMIT - 1:
            return False, trips
        trips += 1
        try:
            if revision is None:
                await kv.create(key, str(tat + 1).encode())
            else:
                await kv.update(key, str(tat + 1).encode(), last=revision)
            return True, trips
        except KeyWrongLastSequenceError:
            continue  # somebody else won the revision: read again


async def _fixed_counter(js: Any, key: str) -> tuple[bool, int]:
    ack = await js.publish(f"bench_ct.{key}.{int(time.time() // 60)}", b"", headers={"Nats-Incr": "+1"})
    return int(ack.val) <= LIMIT, 1


async def compare_designs(url: str) -> list[dict[str, Any]]:
    clients = [await nats.connect(url) for _ in range(3)]
    js = [nc.jetstream() for nc in clients]
    await js[0].add_stream(
        StreamConfig(
            name="BENCH_SL", subjects=["bench_sl.*"], storage=StorageType.MEMORY, discard=DiscardPolicy.NEW,
            discard_new_per_subject=True, max_msgs_per_subject=LIMIT, max_age=60,
        )
    )  # fmt: skip
    await js[0].add_stream(
        StreamConfig(name="BENCH_CT", subjects=["bench_ct.*.*"], storage=StorageType.MEMORY, allow_msg_counter=True)
    )
    await js[0].create_key_value(KeyValueConfig(bucket="bench_gcra", storage=StorageType.MEMORY))
    kvs = [await j.key_value("bench_gcra") for j in js]
    designs = [
        ("sliding-window log (chosen)", lambda i: _sliding_log(js[i % 3], "hot"), 60),
        ("GCRA, KV compare-and-set (refills 1/s)", lambda i: _gcra(kvs[i % 3], "hot"), 119),
        ("fixed-window counter", lambda i: _fixed_counter(js[i % 3], "hot"), 120),
    ]
    rows = []
    for name, decide, worst_minute in designs:
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(decide(i) for i in range(HOT)))
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "design": name,
                "admitted": sum(ok for ok, _ in outcomes),
                "round_trips": sum(trips for _, trips in outcomes),
                "ms": round(elapsed * 1000, 1),
                "most_in_a_sliding_minute": worst_minute,
            }
        )
    for name in ("BENCH_SL", "BENCH_CT", "KV_bench_gcra"):
        await js[0].delete_stream(name)
    for nc in clients:
        await nc.close()
    return rows


# --- part 2: the gateway's limiter, in 1 and 3 processes --------------------------------------------------


def _request(scenario: str, i: int) -> tuple[str, bool, str]:
    """Decision i of a scenario: (endpoint, public, client ip). Spread keys stay under their limits."""
    if scenario == "api_key":
        return f"aep_spread{i // 50}", False, ""
    if scenario == "public":
        return f"aep_public{i // 50}", True, f"198.51.{i // 250 % 256}.{i % 5}"
    return "aep_hot", False, ""


async def _replica(
    url: str, namespace: str, scenario: str, indexes: range, in_flight: int, start_at: float
) -> dict[str, Any]:
    nc = await nats.connect(url)
    limits = Limits(nc, namespace=namespace)
    latencies: list[float] = []
    admitted = refused = 0
    pending = iter(indexes)

    async def worker() -> None:
        nonlocal admitted, refused
        for i in pending:
            endpoint, public, ip = _request(scenario, i)
            t0 = time.perf_counter()
            try:
                await limits.admit_run(endpoint, public, ip)
                admitted += 1
            except RateLimited:
                refused += 1
            latencies.append(time.perf_counter() - t0)

    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    ended = time.time()
    await nc.close()
    return {"latencies": latencies, "admitted": admitted, "refused": refused, "began": began, "ended": ended}


def _replica_process(args: tuple[str, str, str, range, int, float]) -> dict[str, Any]:
    return asyncio.run(_replica(*args))


def measure(url: str, scenario: str, replicas: int, in_flight: int, total: int, pool: Any) -> dict[str, Any]:
    namespace = f"RLBENCH_{uuid.uuid4().hex[:6].upper()}"

    async def declare() -> None:
        async with await nats.connect(url) as nc:
            await Limits(nc, namespace=namespace).start()

    asyncio.run(declare())
    share = total // replicas
    start_at = time.time() + 1.0  # every replica connected before the first decision
    jobs = [(url, namespace, scenario, range(r * share, (r + 1) * share), in_flight, start_at) for r in range(replicas)]
    results = pool.map(_replica_process, jobs)
    latencies = sorted(x for r in results for x in r["latencies"])
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return {
        "scenario": scenario,
        "replicas": replicas,
        "in_flight": in_flight * replicas,
        "decisions_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "admitted": sum(r["admitted"] for r in results),
        "refused": sum(r["refused"] for r in results),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    server = None
    url = os.environ.get("NATS_URL", "")
    if not url:
        server = Nats(Path(tempfile.mkdtemp(prefix="agentry-bench-")) / "nats", free_port())
        server.start()
        url = server.url
    try:
        designs = asyncio.run(compare_designs(url))
        print(f"Designs: {HOT} concurrent decisions on one key from 3 connections, limit {LIMIT}/min")
        print(_table(designs), end="\n\n")
        rows = []
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            for replicas in (1, 3):  # one decision at a time per replica: the latency a request sees
                rows.append(measure(url, "api_key", replicas, 1, TOTAL // 4, pool))
            for scenario in ("api_key", "public", "hot_key"):
                for replicas in (1, 3):
                    rows.append(measure(url, scenario, replicas, CONCURRENCY, TOTAL, pool))
        print(f"Gateway limiter, a process per replica: {TOTAL} decisions per loaded row, {CONCURRENCY} in flight each")
        print("(api_key: one scope; public: client IP + endpoint; hot_key: one endpoint, nearly all refused)")
        print(_table(rows))
    finally:
        if server is not None:
            server.stop()

    def row(replicas: int, in_flight: int) -> dict[str, Any]:
        return next(r for r in rows if r["scenario"] == "api_key" and r["in_flight"] == replicas * in_flight)

    headline, single, idle = row(3, CONCURRENCY), row(1, CONCURRENCY), row(3, 1)
    print(
        json.dumps(
            {
                "bench": "ratelimit",
                "limiter_decisions_per_s": headline["decisions_per_s"],
                "limiter_p99_ms": headline["p99_ms"],
                "limiter_p99_ms_one_in_flight": idle["p99_ms"],
                "single_replica": {"decisions_per_s": single["decisions_per_s"], "p99_ms": single["p99_ms"]},
                "rows": rows,
                "designs": designs,
            }
        )
    )


if __name__ == "__main__":
    main()
