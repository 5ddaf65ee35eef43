"""Runner overhead benchmark (not a test): what the runner adds to a run, with the `mock` model (~0 ms).

Starts its own nats-server and PostgreSQL through `agentry_dev.stack` with fsync ON (PostgreSQL's
defaults; NATS `sync_interval: always`) and one runner process. Then, sequentially (no queueing), it plays the
gateway: subscribe to `run.progress.<id>`, publish RunRequested with JetStream, wait for the terminal progress.
That interval is the runner's whole path: fetch, execute, one upsert, RunCompleted acked by JetStream, then
the progress. Sync runs write one row; async runs two (`running`, then terminal).
The last line is one JSON object with p50/p99 milliseconds per mode.

    BENCH_RUNS=300 python bench/runner.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats

from agentry_common import subjects
from agentry_common.broker import publish_event
from agentry_common.events import EndpointSnapshot, RunRequested
from agentry_dev.stack import Stack, free_port

RUNS = int(os.environ.get("BENCH_RUNS", "300"))


def endpoint(**fields: object) -> EndpointSnapshot:
    return EndpointSnapshot.model_validate(
        {"id": "aep_bench", "slug": "bench", "owner_id": "bench", "workspace_id": "ws", "system_prompt": "Answer.",
         "llm_provider": "mock", **fields}
    )  # fmt: skip


async def measure(nc: nats.NATS, snapshot: EndpointSnapshot, runs: int) -> list[float]:
    js = nc.jetstream()
    samples = []
    for _ in range(runs):
        event = RunRequested(run_id=f"run_{uuid.uuid4().hex}", endpoint=snapshot, input="What is 2 + 2?")
        sub = await nc.subscribe(subjects.run_progress(event.run_id))
        started = time.perf_counter()
        await publish_event(js, subjects.RUN_REQUESTED, event)
        msg = await sub.next_msg(timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
        assert b'"event":"done"' in msg.data
        await sub.unsubscribe()
    return samples


async def main() -> None:
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="agentry-bench-")), nats_port=free_port(), pg_port=free_port(), echo=False
    )
    stack.start_servers()
    stack.migrate()
    try:
        await asyncio.to_thread(stack.start_service, "runner")
        nc = await nats.connect(stack.nats_url)
        await measure(nc, endpoint(), 20)  # warm up connections and statement caches
        results = {}
        for mode, snapshot in (("sync", endpoint()), ("async", endpoint(async_mode=True))):
            samples = sorted(await measure(nc, snapshot, RUNS))
            p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
            results[f"{mode}_p50_ms"], results[f"{mode}_p99_ms"] = round(p50, 2), round(p99, 2)
            print(f"{mode:5}  runs={RUNS}  p50={p50:.2f} ms  p99={p99:.2f} ms  (publish → terminal progress)")
        await nc.close()
        print(json.dumps({"bench": "runner_overhead", **results}))
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
