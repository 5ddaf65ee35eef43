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
- `byo key only`: its own key and no MCP server (sequential only): the secret's cost without the MCP session's.

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

    BENCH_SEQUENTIAL=500 BENCH_WARMUP=100 BENCH_DURATION_S=20 BENCH_CONCURRENCY=32 BENCH_ROUNDS=2 \
      BENCH_ONE_CORE=1 python bench/e2e.py      # BENCH_SECRET_CACHE_TTL_S=0: the runner without its secret cache
    # BENCH_MCP_TOOLS_CACHE_TTL_S=0: the runner lists the MCP server's tools for every run (before its tool cache)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop
from support.wire import COMPLETION, MODEL, Connection, percentile, start_upstream, upstream_stats

from agentry_dev.stack import Stack, dev_token, free_port

SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "500"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "100"))
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "20"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "2")))
ONE_CORE = os.environ.get("BENCH_ONE_CORE", "1") != "0" and len(os.sched_getaffinity(0)) >= 2
SUBBENCHES = os.environ.get("BENCH_E2E_SUBBENCHES", "1") != "0"
# BENCH_SECRET_CACHE_TTL_S=0 runs the runner without its secret cache (every BYO run asks the keys service).
RUNNER_ENV = {"SECRET_CACHE_TTL_S": v} if (v := os.environ.get("BENCH_SECRET_CACHE_TTL_S")) else {}
if (v := os.environ.get("BENCH_MCP_TOOLS_CACHE_TTL_S")) is not None:
    RUNNER_ENV["MCP_TOOLS_CACHE_TTL_S"] = v
PRICE_CENTS = 1
INPUT = "Invoice #42: 3 widgets at $10 each. Extract the total."
SYSTEM_PROMPT = "Extract the invoice total. Answer with the number only."
PLATFORM_KEY = "sk-bench-platform-key"
BYO_KEY = "sk-bench-owner-key"
MCP_TOKEN = "bench-mcp-secret-token"  # noqa: S105 (a fake, for the fake upstream)
ROOT = Path(__file__).resolve().parent.parent
SEQ_PATHS = {"platform": "platform key", "byo": "BYO key + MCP server", "byo_key_only": "BYO key only"}
LOAD_PATHS = ("platform", "byo")


class Processes:
    """Every process on the measured path, for resident memory, CPU time and affinity (PostgreSQL: all its
    backends)."""

    def __init__(self, stack: Stack, upstream: subprocess.Popen[bytes]):
        self.named = {svc.name: psutil.Process(svc.proc.pid) for svc in stack.services if svc.proc}
        if stack.nats is not None and stack.nats.proc is not None:
            self.named["nats-server"] = psutil.Process(stack.nats.proc.pid)
        self.postmaster: psutil.Process | None = None
        if stack.postgres is not None:
            pid_file = stack.postgres.data_dir / "postmaster.pid"
            self.postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        self.named["upstream (fake)"] = psutil.Process(upstream.pid)
        self.named["bench client"] = psutil.Process()

    def _all(self) -> dict[str, list[psutil.Process]]:
        out = {name: [p] for name, p in self.named.items()}
        if self.postmaster is not None:
            out["postgres (all)"] = [self.postmaster, *self.postmaster.children()]
        return out

    def rss_mib(self) -> dict[str, float]:
        # PostgreSQL's shared buffers are counted once per backend: an upper bound.
        return {name: round(sum(p.memory_info().rss for p in ps) / 2**20, 1) for name, ps in self._all().items()}

    def cpu_s(self) -> dict[str, float]:
        def used(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                return 0.0
            return float(t.user + t.system)

        return {name: sum(used(p) for p in ps) for name, ps in self._all().items()}

    def affinity(self) -> dict[str, list[int]]:
        return {name: sorted(set().union(*(p.cpu_affinity() for p in ps))) for name, ps in self._all().items()}


class Bench:
    def __init__(self, stack: Stack, upstream_port: int):
        self.gateway = stack.service("gateway")
        self.keys = stack.service("keys")
        self.upstream_port = upstream_port
        self.auth = {"Authorization": f"Bearer {dev_token(f'bench-{uuid.uuid4().hex[:8]}')}"}
        self.targets: dict[str, tuple[str, bytes]] = {}  # path → (run URL, its headers)
        self.run_body = orjson.dumps({"input": INPUT})
        # What the runner sends the upstream for the platform endpoint (OpenAI chat completions).
        self.direct_body = orjson.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": INPUT}],
                "temperature": 0.3,
                "max_tokens": 4096,
            }
        )
        self.succeeded: Counter[str] = Counter()  # every 200 is a priced run billing must charge once

    def create_endpoints(self) -> None:
        base = {
            "system_prompt": SYSTEM_PROMPT, "llm_provider": "custom", "llm_model": MODEL,
            "llm_base_url": f"http://127.0.0.1:{self.upstream_port}/v1", "price_per_run_cents": PRICE_CENTS,
        }  # fmt: skip
        with httpx.Client(base_url=self.gateway.url, headers=self.auth, timeout=30) as http:

            def workspace() -> str:
                created = http.post("/api/workspaces", json={"name": "bench"}).raise_for_status().json()
                return str(created["workspace"]["id"])

            plain, tooled = workspace(), workspace()
            server = {"name": "invoices", "url": f"http://127.0.0.1:{self.upstream_port}/mcp",
                      "headers": {"X-Bench-Token": MCP_TOKEN}}  # fmt: skip
            http.post(f"/api/workspaces/{tooled}/servers", json=server).raise_for_status()
            paths = (("platform", plain, None), ("byo", tooled, BYO_KEY), ("byo_key_only", plain, BYO_KEY))
            for path, ws, key in paths:
                body = {**base, "name": f"bench-{path}-{uuid.uuid4().hex[:6]}", "workspace_id": ws}
                if key:
                    body["llm_api_key"] = key
                created = http.post("/api/agent-endpoints", json=body).raise_for_status().json()
                self.targets[path] = (created["run_url"], b"authorization: Bearer %s\r\n" % created["api_key"].encode())
            for _ in range(4):  # 2,000 dollars: far more runs than the bench makes
                headers = {"Idempotency-Key": str(uuid.uuid4())}
                http.post("/api/balance/deposit", json={"amount_cents": 50_000}, headers=headers).raise_for_status()

    async def _run(self, conn: Connection, path: str) -> int:
        url, headers = self.targets[path]
        status, body = await conn.post(url, self.run_body, headers)
        if status == 200:
            result = orjson.loads(body)
            assert result["output"] == "30" and result["usage"]["tokens_input"] == 42, body
            self.succeeded[path] += 1
        return status

    async def _direct(self, conn: Connection) -> int:
        status, body = await conn.post("/v1/chat/completions", self.direct_body)
        assert status == 200 and body == COMPLETION
        return status

    async def sequential(self, count: int, warmup: int) -> dict[str, dict[str, float]]:
        """The upstream direct and each path through the gateway, interleaved, one request at a time."""
        direct = await Connection.open(self.upstream_port)
        conns = {path: await Connection.open(self.gateway.port) for path in SEQ_PATHS}
        samples: dict[str, list[float]] = {name: [] for name in ("direct", *SEQ_PATHS)}
        try:
            for i in range(warmup + count):
                for name in samples:
                    started = time.perf_counter()
                    status = await (self._direct(direct) if name == "direct" else self._run(conns[name], name))
                    elapsed = (time.perf_counter() - started) * 1000
                    if status != 200:
                        raise RuntimeError(f"sequential {name} request answered {status}")
                    if i >= warmup:
                        samples[name].append(elapsed)
        finally:
            for conn in (direct, *conns.values()):
                conn.close()
        return {
            name: {
                "p50_ms": round(percentile(s, 0.5), 3),
                "p99_ms": round(percentile(s, 0.99), 3),
                "mean_ms": round(statistics.fmean(s), 3),
            }
            for name, s in samples.items()
        }

    async def _slice(self, path: str, seconds: float, statuses: Counter[str], latencies: list[float]) -> None:
        """CONCURRENCY connections, each sending runs of `path` back to back for `seconds`."""
        conns = [await Connection.open(self.gateway.port) for _ in range(CONCURRENCY)]
        deadline = time.perf_counter() + seconds

        async def worker(conn: Connection) -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status = str(await self._run(conn, path))
                except (ConnectionError, OSError) as err:
                    status = type(err).__name__
                    conn.close()
                    conn = await Connection.open(self.gateway.port)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] += 1
            conn.close()

        await asyncio.gather(*(worker(c) for c in conns))

    async def sustained(self, procs: Processes, duration_s: float) -> dict[str, dict[str, Any]]:
        """DURATION_S per path, in ROUNDS slices alternating between the paths; CPU per run of each path."""
        statuses: dict[str, Counter[str]] = {path: Counter() for path in LOAD_PATHS}
        latencies: dict[str, list[float]] = {path: [] for path in LOAD_PATHS}
        seconds = dict.fromkeys(LOAD_PATHS, 0.0)
        resolved = dict.fromkeys(LOAD_PATHS, 0.0)
        cpu: dict[str, Counter[str]] = {path: Counter() for path in LOAD_PATHS}
        for _ in range(ROUNDS):
            for path in LOAD_PATHS:
                asked = await asyncio.to_thread(self.keys_resolved)
                before, started = procs.cpu_s(), time.perf_counter()
                await self._slice(path, duration_s / ROUNDS, statuses[path], latencies[path])
                seconds[path] += time.perf_counter() - started
                after = procs.cpu_s()
                cpu[path].update({name: after[name] - before.get(name, 0.0) for name in after})
                resolved[path] += await asyncio.to_thread(self.keys_resolved) - asked
        out = {}
        for path in LOAD_PATHS:
            ok = statuses[path].pop("200", 0)
            runs = max(ok + sum(statuses[path].values()), 1)
            per_run = {name: round(s * 1000 / runs, 3) for name, s in cpu[path].items()}
            per_run["total"] = round(sum(per_run.values()), 3)
            out[path] = {
                "runs_per_s": round(ok / seconds[path], 1),
                "succeeded": ok,
                "errors": dict(statuses[path]),
                "seconds": round(seconds[path], 2),
                "p50_ms": round(percentile(latencies[path], 0.5), 2),
                "p99_ms": round(percentile(latencies[path], 0.99), 2),
                "cpu_ms_per_run": per_run,
                # Secrets the keys service resolved per run (its own counter): 0 when the runner's cache holds them.
                "keys_resolves_per_run": round(resolved[path] / runs, 3),
            }
        return out

    def keys_resolved(self) -> float:
        text = httpx.get(f"{self.keys.url}/metrics", timeout=10).text
        match = re.search(r'^agentry_keys_secrets_resolved_total\{outcome="resolved"\} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    async def charged(self, timeout_s: float = 180) -> dict[str, Any]:
        """Wait until billing has charged every succeeded run once."""
        started = time.monotonic()
        want, spent = sum(self.succeeded.values()) * PRICE_CENTS, 0
        async with httpx.AsyncClient(base_url=self.gateway.url, headers=self.auth, timeout=30) as http:
            while time.monotonic() - started < timeout_s:
                spent = (await http.get("/api/balance")).json()["lifetime_spent_cents"]
                if spent >= want:
                    break
                await asyncio.sleep(0.25)
        return {"all_charged": spent == want, "lag_s": round(time.monotonic() - started, 1), "spent_cents": spent,
                "succeeded_runs": sum(self.succeeded.values())}  # fmt: skip

    def upstream_check(self) -> dict[str, Any]:
        """Each run sent the key of its path; every MCP request carried the secret header (a BYO run lists the
        server's tools (two requests) unless the runner still holds them: at most two per BYO run)."""
        seen = upstream_stats(self.upstream_port)
        keys, tokens = seen["llm_keys"], seen["mcp_tokens"]
        byo_runs = self.succeeded["byo"] + self.succeeded["byo_key_only"]
        expected = (
            keys.get(PLATFORM_KEY, 0) == self.succeeded["platform"]
            and keys.get(BYO_KEY, 0) == byo_runs
            # +1: registering the server lists its tools once (`POST .../servers` reports whether it answers)
            and 0 < tokens.get(MCP_TOKEN, 0) <= 2 * (self.succeeded["byo"] + 1)
            and set(tokens) <= {MCP_TOKEN}
        )
        return {"as_expected": expected, "llm_keys": keys, "mcp_tokens": tokens}


@contextmanager
def pinned(cpus: set[int] | None):
    """Processes started inside inherit this CPU affinity (None: leave it as it is)."""
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent on anything but idling, over all cores."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


async def measure(bench: Bench, procs: Processes, sequential: int, warmup: int, one_core: bool) -> dict[str, Any]:
    idle = procs.rss_mib()
    seq = await bench.sequential(sequential, warmup)
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
                    env = {"CUSTOM_API_KEY": PLATFORM_KEY, **RUNNER_ENV} if name == "runner" else {}
                    stack.primary[name] = stack.start_service(name, wait=False, **env)
            for svc in stack.services:
                svc.wait_ready()
            with pinned({1} if one_core else None):
                upstream = start_upstream(upstream_port)
                bench = Bench(stack, upstream_port)
                bench.create_endpoints()
                procs = Processes(stack, upstream)
                sequential = SEQUENTIAL if not one_core else max(SEQUENTIAL // 2, 50)
                return uvloop.run(measure(bench, procs, sequential, WARMUP, one_core))
        finally:
            stack.stop()
            if upstream is not None:
                upstream.kill()
                upstream.wait()


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


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
    print(f"  {'process':<20}{'CPUs':>6}{'RSS MiB idle':>14}{'loaded':>8}{'CPU ms/run platform':>21}{'BYO':>7}")
    for name in cpu_p:
        cpus = ",".join(map(str, r["affinity"].get(name, []))) or "-"
        idle, loaded = rss["idle"].get(name, float("nan")), rss["loaded"].get(name, float("nan"))
        print(f"    {name:<18}{cpus:>6}{idle:>14.1f}{loaded:>8.1f}{cpu_p[name]:>21.2f}{cpu_b[name]:>7.2f}")


def main() -> None:
    result: dict[str, Any] = {"bench": "e2e", "machine": machine(), "runner_env": RUNNER_ENV}
    print(f"e2e: 1 gateway, 1 runner, 1 billing, 1 keys; fsync on; upstream on loopback; {result['machine']}")
    # Each table as soon as it is measured: the sub-benches below take minutes on a busy machine.
    two = run_mode(one_core=False)
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
        overhead_p50_ms=two["overhead_p50_ms"]["platform"],
        overhead_p50_ms_byo=two["overhead_p50_ms"]["byo"],
        overhead_p50_ms_byo_key_only=two["overhead_p50_ms"]["byo_key_only"],
        overhead_p99_ms=two["overhead_p99_ms"]["platform"],
        overhead_p99_ms_byo=two["overhead_p99_ms"]["byo"],
        runs_per_s=two["sustained"]["platform"]["runs_per_s"],
        runs_per_s_byo=two["sustained"]["byo"]["runs_per_s"],
        one_core_runs_per_s=one["sustained"]["platform"]["runs_per_s"] if one else None,
        one_core_runs_per_s_byo=one["sustained"]["byo"]["runs_per_s"] if one else None,
        one_core_overhead_p50_ms=one["overhead_p50_ms"]["platform"] if one else None,
        one_core_overhead_p50_ms_byo=one["overhead_p50_ms"]["byo"] if one else None,
        errors=dict(errors),
        all_charged=two["billing"]["all_charged"] and (one is None or one["billing"]["all_charged"]),
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
