"""Fixtures of the runner's tests.

- `runner_nats`: a NATS server of their own, so no other test's runner competes for `run.requested`
  (the RUNS stream is a work queue) and consumer settings (a short ack wait) are ours to choose.
- `fake_llm`: one loopback HTTP server speaking the OpenAI, Anthropic and Gemini wire formats, scripted per
  model name, recording what it was sent, holding every request to the official SDKs (`fake_llm.py`): a test
  whose requests drift from them fails. The only fake: LLM providers are remote.
- `mcp_server`: a real MCP server (`MCPServer`, streamable HTTP) on loopback.
- `runner` / `keys`: the services as processes on `runner_nats` and the session's PostgreSQL. They are not
  registered in `servers.services`, which the shared `stack` fixture reads to decide what to start.
- `probe`: publishes RunRequested with JetStream and watches progress, outcome events and `runs.get`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp
import nats
import orjson
import pytest
from mcp.server.mcpserver import MCPServer
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agentry_common import rpc, subjects
from agentry_common.broker import publish_event
from agentry_common.events import EndpointSnapshot, McpServerRef, RunProgress, RunRequested, run_progress
from agentry_common.requests import GetRun, RunRecord
from agentry_dev.stack import Nats, Service, Stack, free_port
from agentry_dev.testing import serve_asgi
from agentry_runner.providers.http import platform_session

PLATFORM_KEYS = {"openai": "sk-platform-openai", "anthropic": "sk-ant-platform", "gemini": "gm-platform"}


def _sibling(name: str) -> ModuleType:
    """A helper module beside this file (pytest's importlib mode puts no test directory on `sys.path`)."""
    spec = importlib.util.spec_from_file_location(
        f"agentry_runner_tests_{name}", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_fakes = _sibling("fake_llm")
FakeLLM, Reply, Seen = _fakes.FakeLLM, _fakes.Reply, _fakes.Seen


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM()
    fake.url, stop = await serve_asgi(fake.app)
    yield fake
    await stop()


@pytest.fixture(autouse=True)
def _no_drift_from_the_sdks(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test whose requests to the fake providers drifted from the official SDKs fails, whatever it asserts."""
    yield
    if "fake_llm" in request.fixturenames:
        fake = request.getfixturevalue("fake_llm")
        drift, fake.drift = fake.drift, []
        assert not drift, "requests drifted from the providers' SDKs:\n" + "\n".join(drift)


@dataclass
class McpFixture:
    url: str
    calls: list[tuple[str, dict[str, Any]]]
    headers: list[dict[str, str]]


def make_mcp_server(calls: list[tuple[str, dict[str, Any]]]) -> MCPServer:
    server = MCPServer("weather")

    @server.tool()
    def forecast(city: str, days: int = 1) -> dict[str, Any]:
        """Forecast for a city."""
        calls.append(("forecast", {"city": city, "days": days}))
        return {"city": city, "days": days, "sky": "sunny", "temp_c": 21}

    @server.tool()
    def dump(size: int) -> str:
        """Returns `size` characters."""
        return "x" * size

    @server.tool()
    def explode(reason: str) -> str:
        """Always fails."""
        calls.append(("explode", {"reason": reason}))
        raise ValueError(reason)

    return server


@pytest.fixture(scope="session")
async def mcp_server() -> AsyncIterator[McpFixture]:
    calls: list[tuple[str, dict[str, Any]]] = []
    headers: list[dict[str, str]] = []
    app = make_mcp_server(calls).streamable_http_app()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    url, stop = await serve_asgi(recording)
    yield McpFixture(f"{url}/mcp", calls, headers)
    await stop()


# --- NATS and service processes of our own ---


@contextlib.contextmanager
def private_nats() -> Iterator[Nats]:
    data = Path(tempfile.mkdtemp(prefix="agentry-runner-nats-"))
    server = Nats(data, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def start_process(servers: Stack, name: str, **env: str) -> Service:
    logs = servers.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    svc = Service(name, port, servers.env(**env), log_path=logs / f"{name}-{port}.log", echo=servers.echo)
    svc.start()
    svc.wait_ready()
    return svc


def runner_env(nats_url: str, fake: FakeLLM, **overrides: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "OPENAI_BASE_URL": f"{fake.url}/openai/v1",
        "OPENAI_API_KEY": PLATFORM_KEYS["openai"],
        "GROQ_BASE_URL": f"{fake.url}/groq/openai/v1",
        "GROQ_API_KEY": "gsk-platform",
        "ANTHROPIC_BASE_URL": f"{fake.url}/anthropic",
        "ANTHROPIC_API_KEY": PLATFORM_KEYS["anthropic"],
        "GEMINI_BASE_URL": f"{fake.url}/gemini",
        "GEMINI_API_KEY": PLATFORM_KEYS["gemini"],
        "LLM_TIMEOUT_S": "1.5",
        "LLM_BACKOFF_S": "0.01",
        "LLM_MAX_RETRIES": "2",
        "TOOL_TIMEOUT_S": "3",
        "RUNNER_ACK_WAIT_S": "2",
        "PLATFORM_MARKUP": "1.5",
        **overrides,
    }


@pytest.fixture(scope="session")
def runner_nats() -> Iterator[Nats]:
    with private_nats() as server:
        yield server


@pytest.fixture(scope="session")
async def keys(servers: Stack, runner_nats: Nats) -> AsyncIterator[Service]:
    # It shares the session's database with the main stack's keys service, not its NATS: it must not announce
    # the main stack's expiring keys on its own bus.
    svc = await asyncio.to_thread(start_process, servers, "keys", NATS_URL=runner_nats.url, KEY_EXPIRY_SWEEP_S="0")
    yield svc
    await asyncio.to_thread(svc.stop)


@pytest.fixture(scope="session")
async def runner(servers: Stack, runner_nats: Nats, fake_llm: FakeLLM, keys: Service) -> AsyncIterator[Service]:
    svc = await asyncio.to_thread(start_process, servers, "runner", **runner_env(runner_nats.url, fake_llm))
    yield svc
    await asyncio.to_thread(svc.stop)


@dataclass
class Finished:
    run_id: str
    progress: list[RunProgress]

    @property
    def terminal(self) -> RunProgress:
        return self.progress[-1]

    @property
    def kinds(self) -> list[str]:
        return [p.event for p in self.progress]


class Probe:
    """Plays the gateway's side of the protocol: subscribe to progress, publish the request, wait."""

    def __init__(self, nc: Client, mcp_url: str = ""):
        self.nc = nc
        self.js = nc.jetstream()
        self.mcp_url = mcp_url

    def endpoint(self, **fields: Any) -> EndpointSnapshot:
        base: dict[str, Any] = {
            "id": f"aep_{uuid.uuid4().hex[:12]}",
            "slug": "agent",
            "owner_id": f"user-{uuid.uuid4().hex[:8]}",
            "workspace_id": "ws_test",
            "system_prompt": "You are a test agent.",
            "llm_provider": "mock",
            "llm_model": "mock-1",
            "timeout_ms": 20000,
        }
        return EndpointSnapshot.model_validate({**base, **fields})

    def weather(self, slug: str = "weather", url: str | None = None, secret: str | None = None) -> McpServerRef:
        return McpServerRef(slug=slug, url=url or self.mcp_url, headers_secret_id=secret)

    def event(self, endpoint: EndpointSnapshot, value: Any, **fields: Any) -> RunRequested:
        return RunRequested(run_id=f"run_{uuid.uuid4().hex}", endpoint=endpoint, input=value, **fields)

    async def start(self, endpoint: EndpointSnapshot, value: Any, **fields: Any) -> tuple[RunRequested, Any]:
        event = self.event(endpoint, value, **fields)
        sub = await self.nc.subscribe(subjects.run_progress(event.run_id))
        await publish_event(self.js, subjects.RUN_REQUESTED, event)
        return event, sub

    async def follow(self, run_id: str, sub: Any, timeout: float = 30) -> Finished:
        progress: list[RunProgress] = []
        try:
            while not progress or not progress[-1].terminal:
                msg = await sub.next_msg(timeout=timeout)
                progress.append(run_progress.validate_json(msg.data))
        finally:
            await sub.unsubscribe()
        return Finished(run_id, progress)

    async def run(self, endpoint: EndpointSnapshot, value: Any = "hello", **fields: Any) -> Finished:
        event, sub = await self.start(endpoint, value, **fields)
        return await self.follow(event.run_id, sub)

    async def record(self, run_id: str) -> RunRecord:
        return await rpc.call(self.nc, subjects.RUNS_GET, GetRun(run_id=run_id), RunRecord)

    async def outcomes(self, run_id: str) -> list[dict[str, Any]]:
        """Every run.completed / run.failed of this run stored in the RUN_EVENTS stream, once there is one: the
        runner sends the terminal progress (what `run` waits for) before JetStream has stored the outcome event,
        so right after a run the event may still be on its way."""
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            found = await self._stored_outcomes(run_id)
            if found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.05)

    async def _stored_outcomes(self, run_id: str) -> list[dict[str, Any]]:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=10)
        sub = await self.js.pull_subscribe("run.*", stream=subjects.RUN_EVENTS_STREAM.name, config=config)
        try:
            pending = (await sub.consumer_info()).num_pending
            msgs = await sub.fetch(pending, timeout=5) if pending else []
        finally:
            await sub.unsubscribe()
        events = [orjson.loads(m.data) for m in msgs]
        return [e for e in events if e["run_id"] == run_id]


@pytest.fixture
async def rnc(runner_nats: Nats) -> AsyncIterator[Client]:
    client = await nats.connect(runner_nats.url)
    yield client
    await client.drain()


@pytest.fixture
async def probe(runner: Service, rnc: Client, mcp_server: McpFixture) -> Probe:
    return Probe(rnc, mcp_server.url)


@pytest.fixture
async def llm_http() -> AsyncIterator[aiohttp.ClientSession]:
    """The runner's own client for platform providers (the fake LLM is on loopback)."""
    async with platform_session() as client:
        yield client


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """Helpers that test modules cannot import (pytest runs with --import-mode=importlib)."""
    return SimpleNamespace(
        private_nats=private_nats, start_process=start_process, runner_env=runner_env, Probe=Probe, Reply=Reply
    )


@pytest.fixture
async def service(servers: Stack, runner_nats: Nats, rnc: Client, fake_llm: FakeLLM) -> AsyncIterator[Any]:
    """A RunnerService in the test's process, on the runner's NATS and the session's PostgreSQL."""
    from agentry_runner.database import Database
    from agentry_runner.service import HttpClients, RunnerService
    from agentry_runner.settings import Settings

    env = runner_env(runner_nats.url, fake_llm)
    settings = Settings(
        database_url=servers.database_url, allow_private_urls=True, **{k.lower(): v for k, v in env.items()}
    )
    db = Database(servers.database_url, size=2)
    clients = HttpClients(settings)
    yield RunnerService(settings, rnc, db, clients)
    await clients.aclose()
    await db.close()
