"""The runner keeps resolved secrets in memory and drops them the moment the keys service announces a change:
against the runner and keys processes on their own NATS, with the fake provider and MCP server on loopback."""

from __future__ import annotations

import re

import httpx
import orjson

from agentry_common import rpc, subjects
from agentry_common.requests import DeleteSecret, Done, StoredSecret, StoreSecret


def resolved_by_keys(keys_url: str) -> float:
    text = httpx.get(f"{keys_url}/metrics", timeout=10).text
    match = re.search(r'^agentry_keys_secrets_resolved_total\{outcome="resolved"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def store(rnc, owner_id: str, value: str, secret_id: str | None = None) -> str:
    request = StoreSecret(owner_id=owner_id, value=value, secret_id=secret_id)
    return (await rpc.call(rnc, subjects.SECRETS_STORE, request, StoredSecret)).secret_id


async def test_a_key_replaced_in_place_or_deleted_is_dropped_from_memory_before_the_change_is_answered(
    probe, fake_llm, rnc, keys
):
    endpoint = probe.endpoint(llm_provider="openai", llm_model=fake_llm.model(fake_llm.openai("hi")))
    secret_id = await store(rnc, endpoint.owner_id, "sk-byo-first")
    endpoint = endpoint.model_copy(update={"llm_secret_id": secret_id})

    def keys_sent() -> list[str]:
        return [s.headers["authorization"] for s in fake_llm.requests(endpoint.llm_model)]

    assert (await probe.run(endpoint)).terminal.event == "done"
    resolved = resolved_by_keys(keys.url)
    assert (await probe.run(endpoint)).terminal.event == "done"
    assert resolved_by_keys(keys.url) == resolved  # the second run took the key from memory
    assert keys_sent() == ["Bearer sk-byo-first"] * 2

    await store(rnc, endpoint.owner_id, "sk-byo-second", secret_id=secret_id)  # answered: the old one is gone
    assert (await probe.run(endpoint)).terminal.event == "done"
    assert keys_sent()[-1] == "Bearer sk-byo-second"

    await rpc.call(rnc, subjects.SECRETS_DELETE, DeleteSecret(secret_id=secret_id), Done)
    failed = await probe.run(endpoint)
    assert failed.terminal.data.code == "llm_auth_error" and len(keys_sent()) == 3


async def test_mcp_headers_are_kept_too_and_dropped_with_their_secret(probe, rnc, mcp_server, keys):
    endpoint = probe.endpoint()
    secret_id = await store(rnc, endpoint.owner_id, orjson.dumps({"X-Weather-Token": "tok-cached"}).decode())
    endpoint = endpoint.model_copy(update={"servers": [probe.weather(secret=secret_id)]})
    value = {"mock": {"tool": "weather__forecast", "arguments": {"city": "Bern"}}}

    assert (await probe.run(endpoint, value)).terminal.event == "done"
    resolved = resolved_by_keys(keys.url)
    assert (await probe.run(endpoint, value)).terminal.event == "done"
    assert resolved_by_keys(keys.url) == resolved
    assert any(h.get("x-weather-token") == "tok-cached" for h in mcp_server.headers)

    await rpc.call(rnc, subjects.SECRETS_DELETE, DeleteSecret(secret_id=secret_id), Done)
    before = len(mcp_server.headers)
    finished = await probe.run(endpoint, value)
    # The tool server is not contacted without its headers; the model is told the tool is unusable.
    assert finished.terminal.event == "done" and len(mcp_server.headers) == before
    record = await probe.record(finished.run_id)
    assert record.tool_calls[0].error == "the tool server's headers are gone"
