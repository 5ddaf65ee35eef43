"""The end-to-end bench's workload against a running stack: three priced endpoints on the fake upstream, the
sequential and sustained phases that call them, and the checks afterwards (billing charged every run once, the
upstream saw each path's own key and MCP header). `bench/e2e.py` starts the stacks and reports."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import orjson

from agentry_dev.stack import Stack, dev_token

from .machine import Processes
from .wire import COMPLETION, MODEL, Connection, percentile, upstream_stats

PRICE_CENTS = 1
INPUT = "Invoice #42: 3 widgets at $10 each. Extract the total."
SYSTEM_PROMPT = "Extract the invoice total. Answer with the number only."
PLATFORM_KEY = "sk-bench-platform-key"
BYO_KEY = "sk-bench-owner-key"
OPENAI_KEY = "sk-bench-openai-platform-key"  # the platform's key for the `openai` provider (OPENAI_API_KEY)
MCP_TOKEN = "bench-mcp-secret-token"  # noqa: S105 (a fake, for the fake upstream)
SEQ_PATHS = {
    "platform": "platform key",
    "byo": "BYO key + MCP server",
    "byo_key_only": "BYO key only",
    "openai": "platform provider (openai)",
}
LOAD_PATHS = ("platform", "byo")


class Bench:
    def __init__(self, stack: Stack, upstream_port: int, concurrency: int, rounds: int):
        self.gateway = stack.service("gateway")
        self.keys = stack.service("keys")
        self.upstream_port = upstream_port
        self.concurrency = concurrency  # connections per sustained slice
        self.rounds = rounds  # slices per path, alternating between the paths
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
                self._create(http, path, body)
            # The platform's own provider (the runner's OPENAI_BASE_URL is the upstream): its own HTTP session.
            body = {k: v for k, v in base.items() if k != "llm_base_url"}
            body |= {"llm_provider": "openai", "name": f"bench-openai-{uuid.uuid4().hex[:6]}", "workspace_id": plain}
            self._create(http, "openai", body)
            for _ in range(4):  # 2,000 dollars: far more runs than the bench makes
                headers = {"Idempotency-Key": str(uuid.uuid4())}
                http.post("/api/balance/deposit", json={"amount_cents": 50_000}, headers=headers).raise_for_status()

    def _create(self, http: httpx.Client, path: str, body: dict[str, Any]) -> None:
        created = http.post("/api/agent-endpoints", json=body).raise_for_status().json()
        self.targets[path] = (created["run_url"], b"authorization: Bearer %s\r\n" % created["api_key"].encode())

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
        names = list(samples)
        try:
            for i in range(warmup + count):
                # Each round starts one path later, so every path follows every other equally often: a request
                # that comes right after another run finds the stack just woken, one after the direct call not.
                for name in names[i % len(names) :] + names[: i % len(names)]:
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
        """`concurrency` connections, each sending runs of `path` back to back for `seconds`."""
        conns = [await Connection.open(self.gateway.port) for _ in range(self.concurrency)]
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
        """`duration_s` per path, in `rounds` slices alternating between the paths; CPU per run of each path."""
        statuses: dict[str, Counter[str]] = {path: Counter() for path in LOAD_PATHS}
        latencies: dict[str, list[float]] = {path: [] for path in LOAD_PATHS}
        seconds = dict.fromkeys(LOAD_PATHS, 0.0)
        resolved = dict.fromkeys(LOAD_PATHS, 0.0)
        cpu: dict[str, Counter[str]] = {path: Counter() for path in LOAD_PATHS}
        for _ in range(self.rounds):
            for path in LOAD_PATHS:
                asked = await asyncio.to_thread(self.keys_resolved)
                before, started = procs.cpu_s(), time.perf_counter()
                await self._slice(path, duration_s / self.rounds, statuses[path], latencies[path])
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
            and keys.get(OPENAI_KEY, 0) == self.succeeded["openai"]
            and keys.get(BYO_KEY, 0) == byo_runs
            # +1: registering the server lists its tools once (`POST .../servers` reports whether it answers)
            and 0 < tokens.get(MCP_TOKEN, 0) <= 2 * (self.succeeded["byo"] + 1)
            and set(tokens) <= {MCP_TOKEN}
        )
        return {"as_expected": expected, "llm_keys": keys, "mcp_tokens": tokens}
