"""A run's MCP tools: listed in parallel from real MCP servers (streamable HTTP), named `<slug>__<tool>`;
every failure is a tool error, never an exception."""

from __future__ import annotations

import httpx2
import pytest

from agentry_common.events import McpServerRef
from agentry_common.netguard import guard_transport
from agentry_dev.stack import free_port
from agentry_runner.tools import Toolbox, exposed_name


def toolbox(allow_private: bool = True) -> Toolbox:
    transport = guard_transport(httpx2.AsyncHTTPTransport(trust_env=False), allow_private=allow_private)
    return Toolbox(transport, tool_timeout_s=5)


async def test_tools_of_every_server_are_listed_under_their_server_slug(mcp_server):
    box = toolbox()
    servers = [McpServerRef(slug="weather", url=mcp_server.url), McpServerRef(slug="backup", url=mcp_server.url)]
    await box.open(servers, {"weather": {"X-Weather-Token": "tok-1"}, "backup": {}})
    try:
        names = {spec.name for spec in box.specs}
        assert names == {
            f"{slug}__{tool}" for slug in ("weather", "backup") for tool in ("forecast", "dump", "explode")
        }
        forecast = next(s for s in box.specs if s.name == "weather__forecast")
        assert forecast.description == "Forecast for a city."
        assert forecast.parameters["properties"]["city"]["type"] == "string"
        assert any(h.get("x-weather-token") == "tok-1" for h in mcp_server.headers)
    finally:
        box.close()


async def test_a_call_reaches_the_tool_with_its_arguments_and_returns_its_result(mcp_server):
    box = toolbox()
    await box.open([McpServerRef(slug="weather", url=mcp_server.url)], {})
    try:
        call = await box.call("weather__forecast", {"city": "Lima", "days": 2})
    finally:
        box.close()
    assert ("forecast", {"city": "Lima", "days": 2}) in mcp_server.calls
    assert call.error is None and call.result == {"city": "Lima", "days": 2, "sky": "sunny", "temp_c": 21}
    assert call.name == "weather__forecast" and call.arguments == {"city": "Lima", "days": 2}


async def test_failures_become_error_results(mcp_server):
    box = toolbox()
    down = f"http://127.0.0.1:{free_port()}/mcp"
    servers = [McpServerRef(slug="weather", url=mcp_server.url), McpServerRef(slug="down", url=down)]
    await box.open(servers, {})
    try:
        failed = await box.call("weather__explode", {"reason": "on purpose"})
        unknown = await box.call("weather__nope", {})
        unreachable = await box.call("down__anything", {})
        bad_args = await box.call("weather__forecast", {"days": "many"})
    finally:
        box.close()
    assert failed.result is None and failed.error
    assert unknown.error == "unknown tool 'weather__nope'"
    assert unreachable.error == "tool server unavailable (ConnectError)"
    assert bad_args.error
    assert {s.name for s in box.specs} == {"weather__forecast", "weather__dump", "weather__explode"}


async def test_a_server_on_a_refused_address_contributes_no_tools_and_says_why(mcp_server):
    box = toolbox(allow_private=False)
    await box.open([McpServerRef(slug="weather", url=mcp_server.url)], {})
    try:
        call = await box.call("weather__forecast", {"city": "Lima"})
    finally:
        box.close()
    assert box.specs == []
    assert call.error is not None and call.error.startswith("tool server not allowed")


async def test_headers_that_could_not_be_resolved_disable_the_server(mcp_server):
    box = toolbox()
    gone = "the tool server's headers are gone"
    await box.open([McpServerRef(slug="weather", url=mcp_server.url)], {"weather": gone})
    call = await box.call("weather__forecast", {})
    box.close()
    assert call.error == gone


@pytest.mark.parametrize(
    ("slug", "tool", "expected"),
    [("weather", "forecast", "weather__forecast"), ("my-srv", "get.user/v2", "my-srv__get_user_v2")],
)
def test_exposed_names_use_characters_every_provider_accepts(slug, tool, expected):
    assert exposed_name(slug, tool) == expected


def test_long_exposed_names_are_shortened_stably():
    long = exposed_name("s" * 40, "t" * 40)
    assert len(long) == 64 and long == exposed_name("s" * 40, "t" * 40)
    assert long != exposed_name("s" * 40, "t" * 39 + "u")
