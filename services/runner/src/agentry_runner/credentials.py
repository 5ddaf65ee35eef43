"""The secrets one run needs, resolved in parallel: its BYO LLM key and each MCP server's headers (from memory
once seen: see `agentry_common.secrets`). A missing key fails the run; unusable headers fail only the calls to
that server, with a reason the model and the record may show (never the value)."""

from __future__ import annotations

import asyncio

import orjson

from agentry_common.errors import NotFound, UpstreamFailed
from agentry_common.events import EndpointSnapshot
from agentry_common.secrets import SecretCache

# Per server slug: its headers, or why they are unusable.
ServerHeaders = dict[str, dict[str, str] | str]


async def resolve(secrets: SecretCache, endpoint: EndpointSnapshot) -> tuple[str | None, ServerHeaders]:
    """The BYO LLM key (None: the platform's) and each MCP server's headers (or why they are unusable)."""

    async def llm_key() -> str | None:
        if not endpoint.llm_secret_id:
            return None
        try:
            return await secrets.get(endpoint.llm_secret_id, endpoint.owner_id)
        except NotFound:
            raise UpstreamFailed("the endpoint's LLM API key is gone", code="llm_auth_error") from None

    async def headers(secret_id: str | None) -> dict[str, str] | str:
        if not secret_id:
            return {}
        try:
            value = orjson.loads(await secrets.get(secret_id, endpoint.owner_id))
        except NotFound:
            return "the tool server's headers are gone"
        except orjson.JSONDecodeError:
            return "the tool server's headers are not a JSON object"
        if not isinstance(value, dict):
            return "the tool server's headers are not a JSON object"
        return {str(k): str(v) for k, v in value.items()}

    def ids() -> list[str]:
        return [i for i in (endpoint.llm_secret_id, *(s.headers_secret_id for s in endpoint.servers)) if i]

    if not endpoint.servers or secrets.holds(endpoint.owner_id, ids()):
        # Nothing to wait for (no servers, or every secret in memory): one after the other, no tasks. Gathered,
        # the lookups cost a turn of the event loop each: ~55 µs of a BYO + MCP run's latency.
        key = await llm_key()
        found = [await headers(s.headers_secret_id) for s in endpoint.servers]
    else:  # some must be asked for: side by side
        key, found = await asyncio.gather(
            llm_key(), asyncio.gather(*(headers(s.headers_secret_id) for s in endpoint.servers))
        )
    return key, {s.slug: h for s, h in zip(endpoint.servers, found, strict=True)}
