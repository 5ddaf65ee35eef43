"""What a newcomer (or an attacker) meets in the first hour: hostile bodies, sloppy headers, the docs page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import pytest

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]
pytestmark = pytest.mark.usefixtures("stack")

DEEP = b'{"input": ' + b"[" * 900 + b"]" * 900 + b"}"
DEEP_OBJECT = b'{"name": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}"


class Connection:
    """One keep-alive HTTP/1.1 connection, so a test can tell whether the server kept it open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        fields = [("host", self.host), ("content-type", "application/json"), ("content-length", str(len(body)))]
        fields += list((headers or {}).items())
        data = self.h11.send(h11.Request(method=method, target=path, headers=fields))
        data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        status, content = 0, b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                content += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
        self.h11.start_next_cycle()  # raises if the server said it will close the connection
        return status, httpx.Response(status, content=content).json()


@pytest.fixture
async def connection(gateway_url: str) -> AsyncIterator[Connection]:
    url = urlsplit(gateway_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        yield Connection(reader, writer, url.netloc)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/run/any-slug-at-all", DEEP),
        ("POST", "/api/run/any-slug-at-all", DEEP_OBJECT),
        ("POST", "/api/workspaces", DEEP_OBJECT),
        ("POST", "/api/agent-endpoints", DEEP),
        ("PATCH", "/api/agent-endpoints/aep_x", DEEP_OBJECT),
        ("POST", "/api/balance/deposit", DEEP),
    ],
)
async def test_deeply_nested_json_is_422_and_the_connection_stays_usable(
    connection: Connection, auth: dict[str, str], method: str, path: str, body: bytes
) -> None:
    status, answer = await connection.request(method, path, body, headers=auth)
    assert status == 422, answer
    assert answer["error"]["code"] == "validation_error" and "nested deeper than" in answer["error"]["message"]
    status, answer = await connection.request("GET", "/api/workspaces", headers=auth)  # the same connection
    assert status == 200, answer


async def test_nesting_within_the_limit_still_runs(http: httpx.AsyncClient, make_endpoint: EndpointFactory) -> None:
    created = await make_endpoint()
    nested: Any = "leaf"
    for _ in range(31):
        nested = {"a": [nested]}  # 62 levels, and `input` itself within the body
    r = await http.post(created["run_url"], json={"input": nested}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Token": "a\r\nInjected: yes"}, "headers.X-Token"),
        ({"X-Token": "a\nb"}, "headers.X-Token"),
        ({"X-Token": "a\x00b"}, "headers"),
        ({"Bad Name": "v"}, "'Bad Name'"),
        ({"X-Tok\r\nen": "v"}, "'X-Tok\\r\\nen'"),
        ({"": "v"}, "''"),
        ({"X-Tök": "v"}, "'X-Tök'"),
    ],
)
async def test_mcp_headers_that_http_cannot_send_are_refused_naming_the_header(
    http: httpx.AsyncClient, auth: dict[str, str], workspace: dict[str, Any], headers: dict[str, str], named: str
) -> None:
    url = f"/api/workspaces/{workspace['id']}/servers"
    r = await http.post(url, json={"name": "s", "url": "http://127.0.0.1:9/mcp", "headers": headers}, headers=auth)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and named in error["message"], error
    assert "Injected" not in error["message"]  # the value is never echoed
    assert (await http.get(url, headers=auth)).json()["servers"] == []


async def test_valid_mcp_header_names_are_accepted(
    http: httpx.AsyncClient, auth: dict[str, str], workspace: dict[str, Any]
) -> None:
    url = f"/api/workspaces/{workspace['id']}/servers"
    headers = {"X-Api-Key": "v 1", "authorization": "Bearer t", "x.custom~!#$%&'*+^_`|": "\tok"}
    r = await http.post(url, json={"name": "s", "url": "http://127.0.0.1:9/mcp", "headers": headers}, headers=auth)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("path", ["/api/run/any-slug", "/api/workspaces"])
async def test_a_chunked_body_over_the_limit_is_413(http: httpx.AsyncClient, auth: dict[str, str], path: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    r = await http.post(path, content=chunks(), headers={**auth, "content-type": "application/json"})
    assert "content-length" not in r.request.headers  # it went chunked
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_run_status_without_credentials_is_401_whether_or_not_the_run_exists(
    http: httpx.AsyncClient, make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint(async_mode=True)
    r = await http.post(created["run_url"], json={"input": "x"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 202, r.text
    for url in (r.json()["status_url"], "/api/runs/run_0123456789abcdef0123456789abcdef"):
        answer = await http.get(url)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "missing_api_key"
    junk = await http.get(r.json()["status_url"], headers={"X-API-Key": "not-a-key"})
    assert junk.status_code == 401 and junk.json()["error"]["code"] == "invalid_api_key"
    public = await make_endpoint(async_mode=True, auth_mode="public")
    r = await http.post(public["run_url"], json={"input": "x"})
    assert (await http.get(r.json()["status_url"])).status_code == 200  # a public endpoint's run is anyone's


async def test_an_api_key_without_its_scheme_is_told_so(
    http: httpx.AsyncClient, make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint()
    r = await http.post(created["run_url"], json={"input": "x"}, headers={"Authorization": created["api_key"]})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    assert "Bearer" in r.json()["error"]["message"] and "scheme" in r.json()["error"]["message"]


async def test_a_token_without_its_scheme_is_told_so(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await http.get("/api/workspaces", headers={"Authorization": auth["Authorization"].removeprefix("Bearer ")})
    assert r.status_code == 401 and "scheme" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/run/any-slug", "/api/workspaces"])
async def test_a_json_syntax_error_says_what_and_where_in_words(
    http: httpx.AsyncClient, auth: dict[str, str], path: str
) -> None:
    body = b'{\n  "name": "x"\n  "input": "y"\n}'
    r = await http.post(path, content=body, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {
        "code": "validation_error",
        "message": "body: not valid JSON: Expecting ',' delimiter at line 3, column 3",
    }


async def test_docs_are_served_without_a_cdn_and_the_root_leads_to_the_console(http: httpx.AsyncClient) -> None:
    r = await http.get("/")
    assert r.status_code == 302 and r.headers["location"] == "/console/"
    page = await http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/static/{asset}" in page.text
        served = await http.get(f"/docs/static/{asset}")
        assert served.status_code == 200 and len(served.content) > 10_000
