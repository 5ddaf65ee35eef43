"""End-to-end benchmark (not a test): what the platform adds to an LLM call, and how many runs/s it sustains,
for a run on the platform's key and for a run on the endpoint's own key with an MCP server registered.

Starts its own nats-server and PostgreSQL through `agentry_dev.stack` with fsync ON (PostgreSQL's defaults;
NATS `sync_interval: always`), one gateway, runner, billing and keys process each, and a fake upstream on
loopback in its own process (`support/wire.py`: an OpenAI-compatible completion with usage, and a stateless MCP
server). One owner, one funded wallet, three priced `custom` endpoints pointing at the upstream:

- `platform`: no key of its own; the runner sends the platform's key (`CUSTOM_API_KEY`);
- `byo`: its own `llm_api_key`, in a workspace with a registered MCP server whose headers are a secret: every
  run needs two secrets (key and headers) and the server's tool definitions (`server/discover`, `tools/list`:
  once per `MCP_TOOLS_CACHE_TTL_S` in the runner, or for every run with BENCH_MCP_TOOLS_CACHE_TTL_S=0);
- `byo key only`: its own key and no MCP server (sequential only): the secret's cost without the MCP session's;
- `openai` (sequential only): the `openai` provider on the platform's `OPENAI_API_KEY`, its base URL pointed at
  the upstream: the platform providers' own HTTP session (the three above are `custom`).

The gateway's rate limiter stays on (it is part of the measured path), with limits high enough never to refuse.

1. Sequential, after a warm-up: the upstream called directly, then each endpoint through `POST /api/run/<slug>`,
   interleaved request by request so every path sees the same machine. Overhead = p50 (p99) of a path minus
   that of the direct call.
2. Sustained: CONCURRENCY connections sending runs back to back, DURATION_S per path, in ROUNDS slices that
   alternate between the paths; runs/s, errors, latency and CPU ms per run (every process) per path. Then it
   waits until billing has charged every run exactly once (the wallet's lifetime spend) and checks what the
   upstream saw: the platform key on platform runs, the owner's key and the MCP secret header on BYO runs.
3. The same again with the whole stack (NATS, PostgreSQL and the four services) pinned to CPU 0 and the bench
   client and fake upstream to CPU 1 (CPU affinity, as `taskset -c` sets it), on a fresh stack:
   runs/s and overhead per core. BENCH_ONE_CORE=0 skips it (and it is skipped on a one-CPU machine).
4. `bench/billing.py` and `bench/ratelimit.py` as subprocesses after the stacks are stopped, for
   `charges_per_s` and `limiter_decisions_per_s` (BENCH_E2E_SUBBENCHES=0 skips them).

The last line is one JSON object: `overhead_p50_ms` / `runs_per_s` (platform key), `overhead_p50_ms_byo` /
`runs_per_s_byo`, `one_core_runs_per_s` / `one_core_overhead_p50_ms` (platform key; `_byo` variants too),
`errors` (every non-200 of every sustained phase), `charges_per_s`, and the details.

    BENCH_SEQUENTIAL=500 BENCH_WARMUP=100 BENCH_DURATION_S=20 BENCH_CONCURRENCY=32 BENCH_ROUNDS=4 \
      BENCH_ONE_CORE=1 python bench/e2e.py      # BENCH_SECRET_CACHE_TTL_S=0: the runner without its secret cache
    # BENCH_MCP_TOOLS_CACHE_TTL_S=0: the runner lists the MCP server's tools for every run (before its tool cache)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
from support.machine import Processes, machine, machine_busy_s, pinned
from support.wire import start_upstream
from support.workload import LOAD_PATHS, OPENAI_KEY, PLATFORM_KEY, SEQ_PATHS, Bench

from agentry_dev.stack import Stack, free_port

SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "500"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "100"))
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "20"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
# Four slices of 5 s per path by default: this shared VM's speed moves within seconds, and finer slices spread
# a slow moment over both paths (with two, one path's slices once ran 12-25 % slower in every process).
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "4")))
ONE_CORE = os.environ.get("BENCH_ONE_CORE", "1") != "0" and len(os.sched_getaffinity(0)) >= 2
# BENCH_TWO_CORES=0 measures the one-core mode only (for comparisons; its JSON line then lacks the two-core keys).
TWO_CORES = os.environ.get("BENCH_TWO_CORES", "1") != "0" or not ONE_CORE
SUBBENCHES = os.environ.get("BENCH_E2E_SUBBENCHES", "1") != "0"
# BENCH_SECRET_CACHE_TTL_S=0 runs the runner without its secret cache (every BYO run asks the keys service).
RUNNER_ENV = {"SECRET_CACHE_TTL_S": v} if (v := os.environ.get("BENCH_SECRET_CACHE_TTL_S")) else {}
if (v := os.environ.get("BENCH_MCP_TOOLS_CACHE_TTL_S")) is not None:
    RUNNER_ENV["MCP_TOOLS_CACHE_TTL_S"] = v
ROOT = Path(__file__).resolve().parent.parent


async def measure(bench: Bench, procs: Processes, sequential: int, warmup: int, one_core: bool) -> dict[str, Any]:
    idle = procs.rss_mib()
    before = procs.cpu_s()
    seq = await bench.sequential(sequential, warmup)
    # CPU per gateway run at one request at a time (the direct calls cost the stack nothing): where a
    # sequential run's time goes when no other run shares the wake-ups.
    runs = (sequential + warmup) * len(SEQ_PATHS)
    seq_cpu = {name: round((used - before.get(name, 0.0)) * 1000 / runs, 3) for name, used in procs.cpu_s().items()}
    seq_cpu["total"] = round(sum(seq_cpu.values()), 3)
    busy0, cpu0 = machine_busy_s(), sum(procs.cpu_s().values())
    load = await bench.sustained(procs, DURATION_S)
    for s in load.values():
        # What the stack's CPU could sustain if nothing else ran there: the number the shared machine's noise
        # moves least. Two cores: both, client and upstream included; one core: the stack's core alone.
        cpu = s["cpu_ms_per_run"]
        stack_ms = cpu["total"] - cpu["bench client"] - cpu["upstream (fake)"] if one_core else cpu["total"]
        s["cpu_bound_runs_per_s"] = round((1 if one_core else os.cpu_count() or 1) * 1000 / stack_ms, 1)
    busy1, cpu1 = machine_busy_s(), sum(procs.cpu_s().values())
    loaded = procs.rss_mib()
    billing = await bench.charged()
    seconds = sum(v["seconds"] for v in load.values())
    overhead = {path: round(seq[path]["p50_ms"] - seq["direct"]["p50_ms"], 2) for path in SEQ_PATHS}
    overhead_p99 = {path: round(seq[path]["p99_ms"] - seq["direct"]["p99_ms"], 2) for path in SEQ_PATHS}
    return {
        "overhead_p50_ms": overhead,
        "overhead_p99_ms": overhead_p99,
        "sequential": seq,
        "sequential_cpu_ms_per_run": seq_cpu,
        "sustained": load,
        "billing": billing,
        "upstream": await asyncio.to_thread(bench.upstream_check),
        "rss_mib": {"idle": idle, "loaded": loaded},
        "affinity": procs.affinity(),
        # How many cores other work on the (shared) machine took during the load: runs/s is only as good as
        # that was quiet.
        "other_load_cores": round(max(0.0, busy1 - busy0 - (cpu1 - cpu0)) / seconds, 2),
    }


def run_mode(one_core: bool) -> dict[str, Any]:
    """A fresh stack, measured; with `one_core`, the stack on CPU 0 and the client and upstream on CPU 1."""
    with tempfile.TemporaryDirectory(prefix="agentry-bench-e2e-") as tmp:
        limits = {"RATE_LIMIT_PER_ENDPOINT": "10000000", "RATE_LIMIT_PER_CLIENT_IP": "10000000"}
        stack = Stack(
            Path(tmp), nats_port=free_port(), pg_port=free_port(), fast_pg=False,
            echo=bool(os.environ.get("BENCH_ECHO")), extra_env={"ALLOW_PRIVATE_URLS": "true", **limits},
        )  # fmt: skip
        stack.nats_url = stack.database_url = ""  # always its own servers: fsync on, nothing else on them
        upstream_port = free_port()
        upstream: subprocess.Popen[bytes] | None = None
        try:
            with pinned({0} if one_core else None):
                stack.start_servers()
                stack.migrate()
                for name in ("keys", "billing", "runner", "gateway"):
                    provider = {"CUSTOM_API_KEY": PLATFORM_KEY, "OPENAI_API_KEY": OPENAI_KEY,
                                "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1"}  # fmt: skip
                    env = {**provider, **RUNNER_ENV} if name == "runner" else {}
                    stack.primary[name] = stack.start_service(name, wait=False, **env)
            for svc in stack.services:
                svc.wait_ready()
            with pinned({1} if one_core else None):
                upstream = start_upstream(upstream_port)
                bench = Bench(stack, upstream_port, CONCURRENCY, ROUNDS)
                bench.create_endpoints()
                procs = Processes(stack, upstream)
                sequential = SEQUENTIAL if not one_core else max(SEQUENTIAL // 2, 50)
                return uvloop.run(measure(bench, procs, sequential, WARMUP, one_core))
        finally:
            stack.stop()
            if upstream is not None:
                upstream.kill()
                upstream.wait()


def subbench(script: str, key: str) -> Any:
    """Run another bench as a subprocess; the value of `key` in its last JSON line (None if it failed)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script)], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])[key] if proc.returncode == 0 and lines else None
    except (ValueError, KeyError):
        return None


def report_mode(title: str, r: dict[str, Any], sequential: int) -> None:
    seq, load = r["sequential"], r["sustained"]
    print(f"\n== {title}")
    print(f"sequential, {sequential} requests per path after {WARMUP} warm-up, interleaved request by request")
    print(f"  {'':<26}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'overhead p50':>14}{'p99':>8}")
    d = seq["direct"]
    print(f"  {'upstream direct':<26}{d['p50_ms']:>9.2f}{d['p99_ms']:>9.2f}{d['mean_ms']:>9.2f}")
    for path, label in SEQ_PATHS.items():
        s = seq[path]
        print(f"  {label:<26}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}"
              f"{r['overhead_p50_ms'][path]:>14.2f}{r['overhead_p99_ms'][path]:>8.2f}")  # fmt: skip
    print(f"sustained: concurrency {CONCURRENCY}, {DURATION_S:g} s per path in {ROUNDS} alternating slices")
    print(f"  {'':<26}{'runs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/run':>12}{'CPU-bound runs/s':>18}"
          f"{'keys asked/run':>16}  errors")  # fmt: skip
    for path in LOAD_PATHS:
        s = load[path]
        print(f"  {SEQ_PATHS[path]:<26}{s['runs_per_s']:>9.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
              f"{s['cpu_ms_per_run']['total']:>12.2f}{s['cpu_bound_runs_per_s']:>18.0f}"
              f"{s['keys_resolves_per_run']:>16.3f}  {s['errors'] or 'none'}")  # fmt: skip
    b, u = r["billing"], r["upstream"]
    print(f"  billing: {'every run charged once' if b['all_charged'] else 'NOT all runs charged'}"
          f" ({b['spent_cents']} cents for {b['succeeded_runs']} runs), {b['lag_s']:.1f} s after the load")  # fmt: skip
    print(f"  upstream: {'each path sent its own key and MCP header' if u['as_expected'] else 'UNEXPECTED keys'}"
          f" {u['llm_keys']} {u['mcp_tokens']}")  # fmt: skip
    print(f"  other work on this shared machine during the load: {r['other_load_cores']:.2f} cores busy")
    cpu_p, cpu_b = load["platform"]["cpu_ms_per_run"], load["byo"]["cpu_ms_per_run"]
    rss = r["rss_mib"]
    seq_cpu = r["sequential_cpu_ms_per_run"]
    print(f"  {'process':<20}{'CPUs':>6}{'RSS MiB idle':>14}{'loaded':>8}{'CPU ms/run platform':>21}{'BYO':>7}"
          f"{'sequential':>12}")  # fmt: skip
    for name in cpu_p:
        cpus = ",".join(map(str, r["affinity"].get(name, []))) or "-"
        idle, loaded = rss["idle"].get(name, float("nan")), rss["loaded"].get(name, float("nan"))
        print(f"    {name:<18}{cpus:>6}{idle:>14.1f}{loaded:>8.1f}{cpu_p[name]:>21.2f}{cpu_b[name]:>7.2f}"
              f"{seq_cpu.get(name, float('nan')):>12.2f}")  # fmt: skip


def pick(mode: dict[str, Any] | None, value: Any) -> Any:
    """`value(mode)`, or None for a mode that was not measured."""
    return value(mode) if mode else None


def main() -> None:
    result: dict[str, Any] = {"bench": "e2e", "machine": machine(), "runner_env": RUNNER_ENV}
    print(f"e2e: 1 gateway, 1 runner, 1 billing, 1 keys; fsync on; upstream on loopback; {result['machine']}")
    # Each table as soon as it is measured: the sub-benches below take minutes on a busy machine.
    two = run_mode(one_core=False) if TWO_CORES else None
    if two is not None:
        report_mode("two cores: the stack, the bench client and the fake upstream share them", two, SEQUENTIAL)
    one = run_mode(one_core=True) if ONE_CORE else None
    if one is not None:
        report_mode("one core: the stack on CPU 0; bench client and fake upstream on CPU 1", one,
                    max(SEQUENTIAL // 2, 50))  # fmt: skip
    sys.stdout.flush()
    charges = subbench("billing.py", "charges_per_s") if SUBBENCHES else None
    limiter = subbench("ratelimit.py", "limiter_decisions_per_s") if SUBBENCHES else None
    errors: Counter[str] = Counter()
    for mode in (two, one):
        for path in LOAD_PATHS if mode else ():
            errors.update(mode["sustained"][path]["errors"])  # type: ignore[index]
    result.update(
        overhead_p50_ms=pick(two, lambda m: m["overhead_p50_ms"]["platform"]),
        overhead_p50_ms_byo=pick(two, lambda m: m["overhead_p50_ms"]["byo"]),
        overhead_p50_ms_byo_key_only=pick(two, lambda m: m["overhead_p50_ms"]["byo_key_only"]),
        overhead_p50_ms_openai=pick(two, lambda m: m["overhead_p50_ms"]["openai"]),
        overhead_p99_ms=pick(two, lambda m: m["overhead_p99_ms"]["platform"]),
        overhead_p99_ms_byo=pick(two, lambda m: m["overhead_p99_ms"]["byo"]),
        runs_per_s=pick(two, lambda m: m["sustained"]["platform"]["runs_per_s"]),
        runs_per_s_byo=pick(two, lambda m: m["sustained"]["byo"]["runs_per_s"]),
        one_core_runs_per_s=pick(one, lambda m: m["sustained"]["platform"]["runs_per_s"]),
        one_core_runs_per_s_byo=pick(one, lambda m: m["sustained"]["byo"]["runs_per_s"]),
        one_core_overhead_p50_ms=pick(one, lambda m: m["overhead_p50_ms"]["platform"]),
        one_core_overhead_p50_ms_byo=pick(one, lambda m: m["overhead_p50_ms"]["byo"]),
        errors=dict(errors),
        all_charged=all(mode["billing"]["all_charged"] for mode in (two, one) if mode),
        charges_per_s=charges,
        limiter_decisions_per_s=limiter,
        two_cores=two,
        one_core=one,
    )
    print(f"\ncharges/s (bench/billing.py): {charges}")
    print(f"limiter decisions/s (bench/ratelimit.py): {limiter}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
