"""examples/webhook_forwarder, as a platform team would run it: its own process and durable consumers on the
session's real NATS, a loopback HTTP server as the webhook, and real runs through the four services."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from agentry_common import subjects
from agentry_dev.bus_permissions import WEBHOOK_FORWARDER
from agentry_dev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
FORWARDER = ROOT / "examples" / "webhook_forwarder" / "forwarder.py"
SECRET = "webhook-signing-secret"
FAILURES_PER_EVENT = 2  # the first delivery's two attempts fail; JetStream's redelivery gets through


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Webhook:
    url: str = ""
    delivered: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            event_id = headers.get("x-agentry-event-id", "")
            self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
            if self.attempts[event_id] <= FAILURES_PER_EVENT:
                return 503
            self.delivered.append(Received(headers, body))
            return 204

    def for_run(self, run_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.delivered if r.event.get("run_id") == run_id]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(hook.answer({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/agentry-events"
    yield hook
    server.shutdown()
    server.server_close()


class Forwarder:
    def __init__(self, servers: Stack, webhook: Webhook, durable: str):
        # Its own NATS user, with only the consumer rights bus_permissions.subscriber_permissions grants (the
        # admin's URL only when the suite runs on an external server without users).
        user = servers.nats.user(WEBHOOK_FORWARDER) if servers.nats else None
        own = (
            {"NATS_URL": servers.nats.bare_url, "NATS_USER": user[0], "NATS_PASSWORD": user[1]}
            if servers.nats and user
            else {}
        )
        self.env = {
            **servers.env(),
            **own,
            "WEBHOOK_URL": webhook.url,
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ATTEMPTS": str(FAILURES_PER_EVENT),
            "RETRY_DELAY_S": "0.2",
            "FORWARDER_DURABLE": durable,
        }
        self.log = servers.data_dir / "logs" / f"forwarder-{durable}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, str(FORWARDER)], env=self.env, stdout=out, stderr=out)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
async def forwarder(servers: Stack, webhook: Webhook, nc: Client) -> AsyncIterator[Forwarder]:
    durable = WEBHOOK_FORWARDER  # the name its user's permissions grant; the consumers are deleted after each test
    process = Forwarder(servers, webhook, durable)
    process.start()
    await _wait_for_consumers(nc, durable)
    yield process
    await asyncio.to_thread(process.stop)
    js = nc.jetstream()
    for stream in (subjects.RUN_EVENTS_STREAM.name, subjects.BILLING_EVENTS_STREAM.name):
        with suppress(NotFoundError):
            await js.delete_consumer(stream, durable)


async def _wait_for_consumers(nc: Client, durable: str, timeout: float = 30.0) -> None:
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    for stream in (subjects.RUN_EVENTS_STREAM.name, subjects.BILLING_EVENTS_STREAM.name):
        while True:
            try:
                info = await js.consumer_info(stream, durable)
                if info.num_waiting:  # the forwarder is pulling
                    break
            except NotFoundError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"no consumer {durable} on {stream}"
            await asyncio.sleep(0.1)


async def _eventually(probe: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def _priced_run(
    http: httpx.AsyncClient, auth: dict[str, str], endpoint: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    if endpoint is None:
        ws = (await http.post("/api/workspaces", json={"name": "hooks"}, headers=auth)).json()["workspace"]["id"]
        body = {"name": "hooked", "workspace_id": ws, "system_prompt": "p", "llm_provider": "mock",
                "price_per_run_cents": 7}  # fmt: skip
        endpoint = (await http.post("/api/agent-endpoints", json=body, headers=auth)).json()
        r = await http.post("/api/balance/deposit", json={"amount_cents": 500},
                            headers={**auth, "Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
        assert r.status_code == 201, r.text
    assert endpoint is not None
    r = await http.post(endpoint["run_url"], json={"input": "forward me"}, headers={"X-API-Key": endpoint["api_key"]})
    assert r.status_code == 200, r.text
    return r.json()["run_id"], endpoint


def _schema(name: str) -> dict[str, Any]:
    """An event's schema from docs/asyncapi.json, with the components its `$ref`s point into."""
    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    components = document["components"]["schemas"]
    return {**components[name], "components": {"schemas": components}}


def _check(received: Received, event_type: str) -> None:
    event = received.event
    assert received.headers["x-agentry-event-type"] == event_type
    expected = hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers["x-agentry-signature"] == f"sha256={expected}"
    schema_name = "RunCompleted" if event_type == subjects.RUN_COMPLETED else "ChargeCollected"
    jsonschema.validate(event, _schema(schema_name))  # the documented contract, as delivered
    assert received.headers.get("traceparent") == event["trace"].get("traceparent")


async def test_completed_runs_and_their_charges_reach_the_webhook_despite_its_failures(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str], webhook: Webhook, forwarder: Forwarder
) -> None:
    run_id, _ = await _priced_run(http, auth)
    received = await _eventually(lambda: len(webhook.for_run(run_id)) >= 2 and webhook.for_run(run_id))
    assert received, f"the webhook got {webhook.attempts}"
    by_type = {r.headers["x-agentry-event-type"]: r for r in received}
    assert set(by_type) == {subjects.RUN_COMPLETED, subjects.CHARGE_COLLECTED}
    _check(by_type[subjects.RUN_COMPLETED], subjects.RUN_COMPLETED)
    _check(by_type[subjects.CHARGE_COLLECTED], subjects.CHARGE_COLLECTED)
    assert by_type[subjects.RUN_COMPLETED].headers["x-agentry-event-id"] == f"run.completed:{run_id}"
    assert by_type[subjects.CHARGE_COLLECTED].event["amount_cents"] == 7
    # Each was refused twice (retried in place, then redelivered by JetStream) before it got through.
    assert all(webhook.attempts[r.headers["x-agentry-event-id"]] == FAILURES_PER_EVENT + 1 for r in received)


async def test_events_published_while_the_forwarder_is_down_are_forwarded_when_it_is_back(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str], webhook: Webhook, forwarder: Forwarder, nc: Client
) -> None:
    first, endpoint = await _priced_run(http, auth)
    assert await _eventually(lambda: len(webhook.for_run(first)) == 2)
    await asyncio.to_thread(forwarder.stop)

    missed, _ = await _priced_run(http, auth, endpoint)
    await asyncio.sleep(1)  # billing charges it meanwhile; nobody forwards anything
    assert webhook.for_run(missed) == []

    forwarder.start()  # the same durable consumers: JetStream kept their place
    received = await _eventually(lambda: len(webhook.for_run(missed)) >= 2 and webhook.for_run(missed))
    assert {r.headers["x-agentry-event-type"] for r in received} == {subjects.RUN_COMPLETED, subjects.CHARGE_COLLECTED}
    assert len(webhook.for_run(first)) == 2  # and nothing already acknowledged came again
