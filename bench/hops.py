"""The floor under a run's latency (not a test): what one round trip of each kind on a run's path costs here.

Starts its own nats-server and PostgreSQL through `agentry_dev.stack` with durability on (NATS
`sync_interval: always`, PostgreSQL's defaults), and times, one at a time after a warm-up:
- a core NATS request answered by a second Python process (four one-way hops through nats-server);
- a JetStream publish to a memory stream (the rate limiter's admission) and to a file stream (run.requested,
  run.completed), each until its ack;
- a PostgreSQL upsert in autocommit (the run record).
docs/benchmarks.md adds these up along a run's critical path. The last line is one JSON object.

    BENCH_HOPS=1000 python bench/hops.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import psycopg
import uvloop
from nats.js.api import StorageType, StreamConfig

from agentry_dev.stack import Stack, free_port

N = int(os.environ.get("BENCH_HOPS", "1000"))
WARMUP = 100

RESPONDER = """
import asyncio, sys, nats, uvloop
async def main():
    nc = await nats.connect(sys.argv[1])
    async def echo(msg):
        await msg.respond(b"ok")
    await nc.subscribe("bench.echo", cb=echo)
    await asyncio.Event().wait()
uvloop.run(main())
"""


async def timed(op: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    samples = []
    for i in range(N + WARMUP):
        started = time.perf_counter()
        await op()
        if i >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 3), "p99_ms": round(samples[int(len(samples) * 0.99)], 3)}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentry-bench-hops-") as tmp:
        stack = Stack(Path(tmp), nats_port=free_port(), pg_port=free_port(), fast_pg=False)
        stack.nats_url = stack.database_url = ""  # its own servers, durability on
        responder = None
        try:
            await asyncio.to_thread(stack.start_servers)
            responder = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", RESPONDER, stack.nats_url])
            nc = await nats.connect(stack.nats_url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="BENCH_FILE", subjects=["bench.file"], storage=StorageType.FILE))
            await js.add_stream(StreamConfig(name="BENCH_MEM", subjects=["bench.mem"], storage=StorageType.MEMORY))
            deadline = time.monotonic() + 15
            while True:  # the responder is up once it answers
                try:
                    await nc.request("bench.echo", b"", timeout=0.5)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            await conn.execute("CREATE TABLE bench_hops (id text PRIMARY KEY, v jsonb)")
            counter = iter(range(10**9))

            async def upsert() -> None:
                await conn.execute(
                    "INSERT INTO bench_hops VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
                    (f"r{next(counter)}", '{"status": "succeeded"}'),
                )

            results = {
                "nats_request_reply": await timed(lambda: nc.request("bench.echo", b"x", timeout=5)),
                "jetstream_publish_memory": await timed(lambda: js.publish("bench.mem", b"")),
                "jetstream_publish_file_fsync": await timed(lambda: js.publish("bench.file", b"x" * 400)),
                "postgres_upsert_fsync": await timed(upsert),
            }
            await conn.close()
            await nc.close()
        finally:
            if responder is not None:
                responder.kill()
            await asyncio.to_thread(stack.stop)

    labels = {
        "nats_request_reply": "core NATS request to another process",
        "jetstream_publish_memory": "JetStream publish, memory stream",
        "jetstream_publish_file_fsync": "JetStream publish, file stream, fsync",
        "postgres_upsert_fsync": "PostgreSQL upsert, autocommit, fsync",
    }
    print(f"round trips one at a time, {N} each after {WARMUP} warm-up")
    print(f"  {'':42}{'p50 ms':>8}{'p99 ms':>8}")
    for key, r in results.items():
        print(f"  {labels[key]:42}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}")
    print(json.dumps({"bench": "hops", "samples": N, **results}))


if __name__ == "__main__":
    uvloop.run(main())
