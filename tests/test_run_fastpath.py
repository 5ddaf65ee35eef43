"""`POST /api/run/{slug}` answers the same whether the gateway's fast path serves it or FastAPI does.

The fast path takes `application/json` run requests (tracing off, as in this suite); FastAPI parses every
other JSON media type (`application/<anything>+json`) itself. Each request below is sent both ways to the
same gateway, and the two answers must be identical: status, error body, and the headers a caller reads.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("stack")

FAST = "application/json"
APP = "application/agentry+json"  # JSON to FastAPI, not taken by the fast path
COMPARED_HEADERS = ("content-type", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


async def _endpoint(http: httpx.AsyncClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    ws = (await http.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()["workspace"]["id"]
    body = {"name": f"fp-{uuid.uuid4().hex[:6]}", "workspace_id": ws, "system_prompt": "Be useful.",
            "llm_provider": "mock", **fields}  # fmt: skip
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def both_ways(http: httpx.AsyncClient, url: str, content: bytes, headers: Any) -> list[httpx.Response]:
    """The same request as `application/json` (the fast path) and as another JSON type (FastAPI)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    return [await http.post(url, content=content, headers=[*pairs, ("content-type", media)]) for media in (FAST, APP)]


def comparable(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = r.json()
    if isinstance(body, dict) and "run_id" in body:  # each run has its own id and latency
        body = {**body, "run_id": "<run>", "usage": {**body["usage"], "latency_ms": "<ms>"}}
    headers = {h: r.headers[h] for h in COMPARED_HEADERS if h in r.headers}
    if "x-ratelimit-remaining" in headers:  # one slot fewer for the second request of the pair
        headers["x-ratelimit-remaining"] = "<n>"
    if "x-ratelimit-reset" in headers:
        headers["x-ratelimit-reset"] = "<s>"
    return r.status_code, body, headers


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"input": "what is 6*5"}', 200),
        (b'{"input": {"question": "6*5"}}', 200),
        (b'{"input": 5}', 422),
        (b'{"input": "x", "extra": 1}', 422),
        (b"[1, 2]", 422),
        (b'{"input": "nul \\u0000 here"}', 422),
        (b'{"input": "x"', 422),
        (b"", 422),
        (b'{"input": NaN}', 422),
        (b'{"input": {"n": [123456789012345678901]}}', 422),  # beyond 64 bits: not a float in disguise
        (b'{"input": "caf\xc3\xa9 \xf0\x9f\x98\x80"}', 200),
        (b'{"input": "\xff"}', 422),  # not UTF-8
    ],
)
async def test_the_fast_path_answers_as_the_app_does(http: httpx.AsyncClient, auth: dict[str, str], content, expected):
    created = await _endpoint(http, auth)
    fast, app = await both_ways(http, created["run_url"], content, {"X-API-Key": created["api_key"]})
    assert fast.status_code == expected, fast.text
    assert comparable(fast) == comparable(app)


async def test_auth_and_endpoint_errors_are_the_apps(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await _endpoint(http, auth)
    body = b'{"input": "hi"}'
    cases = [
        (created["run_url"], {}),  # no key: 401 missing_api_key
        (created["run_url"], [("X-API-Key", "aek_wrong"), ("X-API-Key", created["api_key"])]),  # the first counts
        (created["run_url"], {"Authorization": "Bearer aek_not-a-real-key"}),  # 401 invalid_api_key
        ("/api/run/no-such-endpoint-" + uuid.uuid4().hex[:6], {}),  # 404
    ]
    for url, headers in cases:
        fast, app = await both_ways(http, url, body, headers)
        assert fast.status_code in (401, 404)
        assert comparable(fast) == comparable(app)
    r = await http.patch(f"/api/agent-endpoints/{created['endpoint']['id']}", json={"status": "disabled"}, headers=auth)
    assert r.status_code == 200, r.text
    fast, app = await both_ways(http, created["run_url"], body, {"X-API-Key": created["api_key"]})
    assert fast.status_code == 403 and comparable(fast) == comparable(app)


async def test_a_body_over_the_limit_is_refused_413_by_the_app(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await _endpoint(http, auth)
    huge = b'{"input": "' + b"x" * 2_000_000 + b'"}'
    fast, app = await both_ways(http, created["run_url"], huge, {"X-API-Key": created["api_key"]})
    assert fast.status_code == 413 and comparable(fast) == comparable(app)


async def test_runs_served_by_the_fast_path_are_counted_under_their_route(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await _endpoint(http, auth)
    pattern = re.compile(
        r'^agentry_http_requests_total\{[^}]*route="/api/run/\{slug\}"[^}]*status="200"[^}]*\} (\S+)$', re.M
    )

    async def served() -> float:
        text = (await http.get("/metrics")).text
        return sum(float(v) for v in pattern.findall(text))

    before = await served()
    for _ in range(3):
        r = await http.post(created["run_url"], json={"input": "count me"}, headers={"X-API-Key": created["api_key"]})
        assert r.status_code == 200
    assert await served() == before + 3
