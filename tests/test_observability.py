"""Metrics and traces of the running system, read the way an operator's Prometheus and trace backend read them.

The services run as separate processes on a NATS server of this module's own (the session's services
would otherwise take the runs from the shared work queue) and the session's PostgreSQL, with tracing on:
`OTEL_EXPORTER_OTLP_ENDPOINT` points at an OTLP/HTTP receiver on loopback that keeps the spans in memory.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from mcp.server.mcpserver import MCPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from agentry_dev.stack import SERVICES, Nats, Service, Stack, dev_token, free_port
from agentry_dev.testing import serve_asgi

OBSERVABILITY = Path(__file__).resolve().parents[1] / "deploy" / "observability"
METRIC_NAME = re.compile(r"\bagentry_[a-z0-9_]+")


# --- an OTLP/HTTP trace receiver on loopback ---


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int  # OTLP: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    failed: bool


@dataclass
class OtlpReceiver:
    spans: list[ExportedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    span = ExportedSpan(
                        resource.get("service.name", ""), s.name, s.kind, s.trace_id.hex(), s.span_id.hex(),
                        s.parent_span_id.hex(), attributes, s.status.code == 2,
                    )  # fmt: skip
                    with self.lock:
                        self.spans.append(span)

    def where(self, **attributes: Any) -> list[ExportedSpan]:
        with self.lock:
            return [s for s in self.spans if all(s.attributes.get(k) == v for k, v in attributes.items())]

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def otlp() -> Iterator[tuple[str, OtlpReceiver]]:
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/v1/traces":
                receiver.accept(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", receiver
    server.shutdown()
    server.server_close()


# --- the observed system ---


@dataclass
class Observed:
    nats_url: str
    services: dict[str, Service]
    spans: OtlpReceiver

    @property
    def gateway(self) -> str:
        return self.services["gateway"].url


@pytest.fixture(scope="module")
async def observed(servers: Stack, otlp: tuple[str, OtlpReceiver]) -> AsyncIterator[Observed]:
    endpoint, receiver = otlp
    data = Path(tempfile.mkdtemp(prefix="agentry-observed-nats-"))
    nats = Nats(data, free_port())
    nats.start()
    env = {
        "NATS_URL": nats.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: spans reach the receiver soon after they end
        "RATE_LIMIT_PER_ENDPOINT": "1",  # a second run of an endpoint is refused: the refusal is counted too
        # The session's database, another NATS: its keys service must not announce the main stack's expiring keys.
        "KEY_EXPIRY_SWEEP_S": "0",
    }
    started: dict[str, Service] = {}
    try:
        for name in SERVICES:
            started[name] = servers.start_service(name, wait=False, **env)
        for svc in started.values():
            await asyncio.to_thread(svc.wait_ready)
        yield Observed(nats.url, started, receiver)
    finally:
        for svc in started.values():
            await asyncio.to_thread(svc.stop)
        nats.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
async def tool_server() -> AsyncIterator[str]:
    """A real MCP server (streamable HTTP) with one tool, so a run's trace has a tool call in it."""
    server = MCPServer("tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    url, stop = await serve_asgi(server.streamable_http_app())
    yield f"{url}/mcp"
    await stop()


@dataclass
class Endpoint:
    id: str
    run_url: str
    api_key: str
    auth: dict[str, str]


async def _priced_endpoint(http: httpx.AsyncClient, tool_url: str | None = None, price: int = 5) -> Endpoint:
    """A fresh owner's mock endpoint at `price` cents, with a funded wallet (and an MCP server, if given).

    A test whose run is priced waits for its charge: the next test's metric deltas must not include it."""
    auth = {"Authorization": f"Bearer {dev_token(f'user-{uuid.uuid4().hex[:12]}')}"}
    r = await http.post("/api/workspaces", json={"name": "observed"}, headers=auth)
    workspace_id = r.json()["workspace"]["id"]
    if tool_url is not None:
        r = await http.post(f"/api/workspaces/{workspace_id}/servers", json={"name": "tools", "url": tool_url},
                            headers=auth)  # fmt: skip
        assert r.status_code == 201, r.text
    body = {
        "name": f"observed-{uuid.uuid4().hex[:8]}",
        "workspace_id": workspace_id,
        "system_prompt": "Answer.",
        "llm_provider": "mock",
        "llm_model": "mock-1",
        "price_per_run_cents": price,
    }
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    r = await http.post("/api/balance/deposit", json={"amount_cents": 500},
                        headers={**auth, "Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
    assert r.status_code == 201, r.text
    return Endpoint(created["endpoint"]["id"], created["run_url"], created["api_key"], auth)


async def _charged(http: httpx.AsyncClient, endpoint: Endpoint, run_id: str) -> bool:
    r = await http.get(f"/api/agent-endpoints/{endpoint.id}/runs", headers=endpoint.auth)
    return any(run["id"] == run_id and run["charge"]["status"] == "collected" for run in r.json()["runs"])


async def _eventually(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


# --- traces ---

SERVER, PRODUCER, CONSUMER, CLIENT = 2, 4, 5, 3


async def test_one_run_is_one_trace_from_the_http_request_through_the_runner_to_billing(
    observed: Observed, tool_server: str
) -> None:
    async with httpx.AsyncClient(base_url=observed.gateway, timeout=30) as http:
        endpoint = await _priced_endpoint(http, tool_server)
        directive = {"mock": {"tool": "tools__add", "arguments": {"a": 2, "b": 3}}}
        r = await http.post(endpoint.run_url, json={"input": directive}, headers={"X-API-Key": endpoint.api_key})
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        assert await _eventually(lambda: _charged(http, endpoint, run_id))

    async def whole_trace() -> list[ExportedSpan]:
        published = observed.spans.where(**{"agentry.run_id": run_id})
        spans = observed.spans.trace(published[0].trace_id) if published else []
        return spans if any(s.service == "agentry-billing" for s in spans) else []

    spans = await _eventually(whole_trace)
    assert spans, f"no trace reached billing; spans of the run: {observed.spans.where(**{'agentry.run_id': run_id})}"
    by_name = {s.name: s for s in spans}
    request = by_name["POST /api/run/{slug}"]
    publish = by_name["run.requested publish"]
    run = by_name["run"]
    charge = by_name["charge"]
    chats = [s for s in spans if s.name == "chat mock-1"]
    tool = by_name["execute_tool tools__add"]

    # One trace: the caller's request is its root, and each hop is the child of the one before it.
    assert (request.service, request.kind, request.parent_id) == ("agentry-gateway", SERVER, "")
    assert request.attributes["http.route"] == "/api/run/{slug}"
    assert request.attributes["http.response.status_code"] == 200
    assert (publish.service, publish.kind) == ("agentry-gateway", PRODUCER)
    verify = by_name["keys.verify"]  # the API key was checked by the keys service, within the request
    assert (verify.service, verify.kind) == ("agentry-gateway", CLIENT)
    assert request.span_id in _ancestors(verify, spans)
    assert request.span_id in _ancestors(publish, spans)  # FastAPI's own endpoint span may sit between them
    assert (run.service, run.kind, run.parent_id) == ("agentry-runner", CONSUMER, publish.span_id)
    assert run.attributes["agentry.run.status"] == "succeeded"
    assert len(chats) == 2  # asks for the tool, then answers with its result
    assert all((c.service, c.kind, c.parent_id) == ("agentry-runner", CLIENT, run.span_id) for c in chats)
    assert {c.attributes["gen_ai.provider.name"] for c in chats} == {"mock"}
    assert all(c.attributes["gen_ai.usage.output_tokens"] > 0 for c in chats)
    assert (tool.parent_id, tool.failed) == (run.span_id, False)
    assert (charge.service, charge.kind, charge.parent_id) == ("agentry-billing", CONSUMER, run.span_id)
    assert charge.attributes["agentry.charge.status"] == "collected"
    assert not any(s.failed for s in spans)


def _ancestors(span: ExportedSpan, spans: list[ExportedSpan]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span.span_id)
    return chain


async def test_a_callers_traceparent_is_continued_by_the_run(observed: Observed) -> None:
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with httpx.AsyncClient(base_url=observed.gateway, timeout=30) as http:
        endpoint = await _priced_endpoint(http, price=0)
        headers = {"X-API-Key": endpoint.api_key, "traceparent": f"00-{caller_trace}-{caller_span}-01"}
        r = await http.post(endpoint.run_url, json={"input": "hello"}, headers=headers)
        assert r.status_code == 200, r.text

    async def request_and_run() -> tuple[list[ExportedSpan], list[ExportedSpan]] | None:
        spans = observed.spans.trace(caller_trace)
        requests = [s for s in spans if s.service == "agentry-gateway" and s.name == "POST /api/run/{slug}"]
        runs = [s for s in spans if s.service == "agentry-runner" and s.name == "run"]
        return (requests, runs) if requests and runs else None

    found = await _eventually(request_and_run)
    assert found, observed.spans.trace(caller_trace)
    [request], [_] = found
    assert request.parent_id == caller_span


async def test_log_lines_written_during_a_run_carry_its_run_id_and_trace_id(observed: Observed) -> None:
    async with httpx.AsyncClient(base_url=observed.gateway, timeout=30) as http:
        # A tool server nobody listens on: the runner logs a warning while the run goes on without its tools.
        endpoint = await _priced_endpoint(http, f"http://127.0.0.1:{free_port()}/mcp", price=0)
        r = await http.post(endpoint.run_url, json={"input": "hello"}, headers={"X-API-Key": endpoint.api_key})
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]

    async def warning() -> list[dict[str, Any]]:
        log_path = observed.services["runner"].log_path
        assert log_path is not None
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("run_id") == run_id and "unavailable" in line["msg"]]

    [line] = await _eventually(warning)
    recorded = {"agentry.run_id": run_id, "agentry.run.status": "succeeded"}
    [run] = await _eventually(lambda: _async(observed.spans.where(**recorded)))
    assert line["trace_id"] == run.trace_id
    assert line["service"] == "runner" and line["level"] == "warning"


async def _async(value: Any) -> Any:
    return value


# --- metrics ---


async def _scrape(observed: Observed) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Every service's samples, keyed by (sample name, sorted labels)."""
    out = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, svc in observed.services.items():
            text = (await client.get(f"{svc.url}/metrics")).text
            out[name] = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
    return out


def _delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_each_service_counts_a_run_with_its_labels(observed: Observed) -> None:
    async with httpx.AsyncClient(base_url=observed.gateway, timeout=30) as http:
        endpoint = await _priced_endpoint(http)
        before = await _scrape(observed)
        r = await http.post(endpoint.run_url, json={"input": "count me"}, headers={"X-API-Key": endpoint.api_key})
        assert r.status_code == 200, r.text
        run_id, usage = r.json()["run_id"], r.json()["usage"]
        assert await _eventually(lambda: _charged(http, endpoint, run_id))
        r = await http.post(endpoint.run_url, json={"input": "again"}, headers={"X-API-Key": endpoint.api_key})
        assert r.status_code == 429, r.text  # RATE_LIMIT_PER_ENDPOINT=1
        stray = f"/no-such-page-{uuid.uuid4().hex}"
        assert (await http.get(stray)).status_code == 404
        raw = (await http.get("/metrics")).text
    after = await _scrape(observed)
    assert stray not in raw  # a path no route matched is counted as `unmatched`, never as itself

    gateway, runner, billing, keys = (after[n] for n in ("gateway", "runner", "billing", "keys"))
    g, rn, b, k = (before[n] for n in ("gateway", "runner", "billing", "keys"))
    run_route = {"service": "gateway", "route": "/api/run/{slug}", "method": "POST"}
    assert _delta(g, gateway, "agentry_http_requests_total", **run_route, status="200") == 1
    assert _delta(g, gateway, "agentry_http_requests_total", **run_route, status="429") == 1
    assert _delta(g, gateway, "agentry_http_request_seconds_count", **run_route) == 2
    unmatched = {"service": "gateway", "route": "unmatched", "method": "GET", "status": "404"}
    assert _delta(g, gateway, "agentry_http_requests_total", **unmatched) == 1
    assert _delta(g, gateway, "agentry_rate_limit_refusals_total", scope="endpoint") == 1
    # The first run asked the keys service; the refused one was answered from the gateway's cache.
    assert _delta(g, gateway, "agentry_gateway_key_verifications_total", source="keys_service", outcome="valid") == 1
    assert _delta(g, gateway, "agentry_gateway_key_verifications_total", source="cache", outcome="valid") == 1
    assert _delta(k, keys, "agentry_keys_verifications_total", outcome="valid") == 1

    model = {"provider": "mock", "model": "mock-1"}
    assert _delta(rn, runner, "agentry_runner_runs_total", **model, status="succeeded") == 1
    assert _delta(rn, runner, "agentry_runner_llm_call_seconds_count", **model, outcome="ok") == usage["iterations"]
    assert _delta(rn, runner, "agentry_runner_tokens_total", **model, direction="input") == usage["tokens_input"]
    assert _delta(rn, runner, "agentry_runner_tokens_total", **model, direction="output") == usage["tokens_output"]
    assert ("agentry_runner_cost_cents_total", tuple(sorted(model.items()))) in runner  # the mock costs nothing

    assert _delta(b, billing, "agentry_billing_charges_total", outcome="collected") == 1
    assert _delta(b, billing, "agentry_billing_charged_cents_total", outcome="collected") == 5
    assert ("agentry_billing_consumer_pending", ()) in billing
    assert ("agentry_runner_consumer_pending", ()) in runner
    for name, samples in after.items():  # and every service counts its own HTTP requests by route template
        assert any(k[0] == "agentry_http_requests_total" and ("service", name) in k[1] for k in samples), name


# --- the dashboard and alert rules in deploy/observability ---


def _exported_names(samples: dict[str, dict[Any, float]], texts: dict[str, str]) -> set[str]:
    names = {key[0] for per_service in samples.values() for key in per_service}
    for text in texts.values():  # labelled metrics nothing has touched yet still declare their family
        for family in text_string_to_metric_families(text):
            suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


async def test_the_dashboard_and_alerts_use_only_metrics_the_services_export(observed: Observed) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        texts = {n: (await client.get(f"{s.url}/metrics")).text for n, s in observed.services.items()}
    exported = _exported_names(await _scrape(observed), texts)

    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    required = {
        "AgentryHighErrorRate",
        "AgentryRunQueueLag",
        "AgentryBillingConsumerLag",
        "AgentryUncollectedCharges",
        "AgentryRunsFailedOnLastDelivery",
        "AgentryChargeEventsDropped",
    }
    assert required <= {a["alert"] for a in alerts}
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        promql_parser.parse(alert["expr"])  # raises on a syntax error, as promtool would
        assert set(METRIC_NAME.findall(alert["expr"])) <= exported, alert["alert"]

    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert exprs and all(METRIC_NAME.search(e) for e in exprs)
    for expr in exprs:
        promql_parser.parse(expr.replace("$__rate_interval", "5m"))  # Grafana's variable, then plain PromQL
    unknown = {name for e in exprs for name in METRIC_NAME.findall(e)} - exported
    assert not unknown, unknown
