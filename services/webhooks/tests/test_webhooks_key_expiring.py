"""`key.expiring`, end to end: a caller key set to expire within the week reaches its owner's webhook once, signed,
with `{endpoint_id, key_id, expires_at}`; moving its expiry announces it again; a key further out is not announced.
The keys service sweeps every `KEY_EXPIRY_SWEEP_S` (half a second in tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as StandardWebhook

from .conftest import Receiver

pytestmark = pytest.mark.usefixtures("stack")


async def _post(http: httpx.AsyncClient, auth: dict[str, str], url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(url, json=body, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_key_expiring_within_the_week_is_announced_once_per_expiry(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    hook = await _post(http, auth, "/api/webhooks", {"url": receiver.url, "events": ["key.expiring"]})
    workspace = (await _post(http, auth, "/api/workspaces", {"name": "Acme"}))["workspace"]
    endpoint = (
        await _post(http, auth, "/api/agent-endpoints", {
            "name": "Expiring", "workspace_id": workspace["id"], "system_prompt": "Hi.", "llm_provider": "mock",
        })
    )["endpoint"]  # fmt: skip
    keys_url = f"/api/agent-endpoints/{endpoint['id']}/keys"
    now = datetime.now(UTC)
    later = await _post(http, auth, keys_url, {"name": "later", "expires_at": (now + timedelta(days=30)).isoformat()})
    soon = await _post(http, auth, keys_url, {"name": "soon", "expires_at": (now + timedelta(days=3)).isoformat()})

    (got,) = await receiver.wait_for(1)
    body = StandardWebhook(hook["secret"]).verify(got.body, got.headers)
    assert body["type"] == "key.expiring"
    assert set(body["data"]) == {"endpoint_id", "key_id", "expires_at"}
    assert body["data"]["endpoint_id"] == endpoint["id"] and body["data"]["key_id"] == soon["key"]["id"]
    assert _at(body["data"]["expires_at"]) == _at(soon["key"]["expires_at"])
    assert "aek_" not in got.body.decode()  # the key's id, never the key

    await asyncio.sleep(1.5)  # three more sweeps
    assert len(receiver.got) == 1

    moved = now + timedelta(days=5)
    r = await http.patch(f"{keys_url}/{soon['key']['id']}", json={"expires_at": moved.isoformat()}, headers=auth)
    assert r.status_code == 200, r.text
    again = (await receiver.wait_for(2))[1]
    data = StandardWebhook(hook["secret"]).verify(again.body, again.headers)["data"]
    assert data["key_id"] == soon["key"]["id"] and _at(data["expires_at"]) == _at(r.json()["key"]["expires_at"])
    await asyncio.sleep(1.0)
    keys_announced = [StandardWebhook(hook["secret"]).verify(g.body, g.headers)["data"]["key_id"] for g in receiver.got]
    assert keys_announced == [soon["key"]["id"]] * 2 and later["key"]["id"] not in keys_announced
