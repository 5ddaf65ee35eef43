"""What a registered MCP server offers, asked live: `GET …/servers/{id}/tools`, and registration's report."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer

from agentry_dev.stack import free_port
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")

TOKEN = f"tok-{uuid.uuid4().hex}"


@pytest.fixture
async def guarded_server() -> AsyncIterator[str]:
    """A real MCP server (streamable HTTP) that wants `Authorization: Bearer <TOKEN>`, and whose tool
    description echoes the token back, as a careless server might."""
    mcp = MCPServer("calc")

    @mcp.tool(description=f"Adds two integers. (Called with {TOKEN}.)")
    def add(a: int, b: int) -> int:
        return a + b

    inner = mcp.streamable_http_app()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"authorization", f"Bearer {TOKEN}".encode()) not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    url, stop = await serve_asgi(app)
    try:
        yield f"{url}/mcp"
    finally:
        await stop()


async def _register(http: httpx.AsyncClient, auth: dict[str, str], ws: str, **body: Any) -> httpx.Response:
    return await http.post(f"/api/workspaces/{ws}/servers", json={"name": "calc", **body}, headers=auth)


@pytest.fixture
async def ws(http: httpx.AsyncClient, auth: dict[str, str]) -> str:
    return str((await http.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()["workspace"]["id"])


async def test_a_reachable_server_reports_its_tools_and_never_its_header_values(
    http: httpx.AsyncClient, auth: dict[str, str], ws: str, guarded_server: str, make_auth: Any
) -> None:
    r = await _register(http, auth, ws, url=guarded_server, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    assert r.json()["reachable"] is True and r.json()["tools"] == 1 and TOKEN not in r.text
    server_id = r.json()["server"]["id"]

    listed = await http.get(f"/api/workspaces/{ws}/servers/{server_id}/tools", headers=auth)
    assert listed.status_code == 200, listed.text
    (tool,) = listed.json()["tools"]
    assert tool["name"] == "add" and tool["llm_name"] == "calc__add"
    assert set(tool["input_schema"]["properties"]) == {"a", "b"}
    assert tool["description"].startswith("Adds two integers.")
    assert TOKEN not in listed.text and "[redacted]" in tool["description"]

    stranger = await http.get(f"/api/workspaces/{ws}/servers/{server_id}/tools", headers=make_auth("stranger"))
    assert stranger.status_code == 404


async def test_a_server_that_refuses_or_is_not_there_is_registered_but_reported_unreachable(
    http: httpx.AsyncClient, auth: dict[str, str], ws: str, guarded_server: str
) -> None:
    wrong = await _register(http, auth, ws, url=guarded_server, headers={"Authorization": "Bearer wrong-token"})
    nobody = await _register(http, auth, ws, url=f"http://127.0.0.1:{free_port()}/mcp")
    for r in (wrong, nobody):
        assert r.status_code == 201, r.text
        assert r.json()["reachable"] is False and r.json()["tools"] == 0 and r.json()["problem"]
        assert "wrong-token" not in r.text
        listed = await http.get(f"/api/workspaces/{ws}/servers/{r.json()['server']['id']}/tools", headers=auth)
        assert listed.status_code == 502, listed.text
        assert listed.json()["error"]["code"] == "tool_server_unavailable" and "wrong-token" not in listed.text
    ids = {s["id"] for s in (await http.get(f"/api/workspaces/{ws}/servers", headers=auth)).json()["servers"]}
    assert ids == {wrong.json()["server"]["id"], nobody.json()["server"]["id"]}  # both registered all the same
