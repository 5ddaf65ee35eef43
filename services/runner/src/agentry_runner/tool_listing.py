"""`tools.list`: what one MCP server offers right now, for its owner (the gateway asks; a runner answers).

The runner answers because only it may resolve secrets (the server's headers) and it already reaches MCP
servers through the SSRF guard. The answer holds the server's tool names, descriptions and schemas, never a
header value: should a server echo one back, it is replaced before the answer leaves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from agentry_common.errors import NotFound, UpstreamFailed
from agentry_common.requests import ListTools, ToolInfo, ToolList
from agentry_common.secrets import SecretCache

from .clients import HttpClients
from .tool_cache import ToolCache
from .tools import Toolbox

UNAVAILABLE = "tool_server_unavailable"
REDACTED = "[redacted]"
MIN_SECRET_WORD = 8


async def list_tools(
    cmd: ListTools, secrets: SecretCache, clients: HttpClients, cache: ToolCache | None = None
) -> ToolList:
    """Always asks the server (its owner looks at what it offers now); what it answers is what runs use next."""
    headers = await _headers(cmd, secrets)
    toolbox = Toolbox(clients.mcp, tool_timeout_s=cmd.timeout_s, cache=cache)
    try:
        async with asyncio.timeout(cmd.timeout_s):
            await toolbox.open([cmd.server], {cmd.server.slug: headers}, owner_id=cmd.owner_id, fresh=True)
    except TimeoutError:
        raise UpstreamFailed("the tool server did not answer in time", code=UNAVAILABLE) from None
    finally:
        toolbox.close()
    error, offered = toolbox.offered(cmd.server.slug)
    if error is not None:
        raise UpstreamFailed(f"the tool server cannot be used: {error}", code=UNAVAILABLE)
    tools = [
        ToolInfo(name=name, llm_name=spec.name, description=spec.description, input_schema=spec.parameters)
        for name, spec in offered
    ]
    return _without(ToolList(tools=tools), list(headers.values()))


async def _headers(cmd: ListTools, secrets: SecretCache) -> dict[str, str]:
    secret_id = cmd.server.headers_secret_id
    if not secret_id:
        return {}
    try:
        value: Any = orjson.loads(await secrets.get(secret_id, cmd.owner_id))
    except (NotFound, orjson.JSONDecodeError):
        value = None
    if not isinstance(value, dict):
        raise UpstreamFailed("the tool server's stored headers are unusable; register it again", code=UNAVAILABLE)
    return {str(k): str(v) for k, v in value.items()}


def _without(answer: ToolList, secrets: list[str]) -> ToolList:
    """The answer with every header value replaced, in every string (keys too) wherever the server put it; and
    each word of a value on its own too (the token of `Bearer <token>`), but for words too short to be secret."""
    words = {word for value in secrets for word in value.split() if len(word) >= MIN_SECRET_WORD}
    ordered = sorted({s for s in secrets if s} | words, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in ordered:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {scrub(k): scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return ToolList.model_validate(scrub(answer.model_dump(mode="json"))) if ordered else answer
