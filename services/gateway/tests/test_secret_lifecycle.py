"""Secrets (LLM keys, MCP headers) live in the keys service; the catalog's rows only name them. A change that
is refused or never committed leaves the keys service as it was, and a secret that no row names any more is
deleted, against the real services, PostgreSQL and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from nats.aio.client import Client

from agentry_common import rpc, subjects
from agentry_common.broker import make_broker
from agentry_common.errors import Unauthorized
from agentry_common.requests import ResolvedSecret, ResolveSecret, VerifiedKey, VerifyKey
from agentry_common.sealed import ReplyKey
from agentry_dev.stack import Stack
from agentry_gateway.entrypoints.container import Gateway
from agentry_gateway.schemas import EndpointCreate, ServerCreate
from agentry_gateway.settings import Settings

pytestmark = pytest.mark.usefixtures("stack")
REPLY_KEY = ReplyKey()


async def secrets_of(servers: Stack, nc: Client, owner_id: str) -> list[str]:
    """The values of every secret the keys service holds for the owner (resolved as the runner would)."""
    url = servers.database_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT id FROM keys.secrets WHERE owner_id = %s ORDER BY id", (owner_id,))
        ids = [row[0] for row in await cursor.fetchall()]
    values = []
    for secret_id in ids:
        ask = ResolveSecret(secret_id=secret_id, owner_id=owner_id, reply_key=REPLY_KEY.public)
        resolved = await rpc.call(nc, subjects.SECRETS_RESOLVE, ask, ResolvedSecret)
        values.append(REPLY_KEY.open(resolved.sealed, secret_id))
    return sorted(values)


async def test_a_patch_refused_for_its_slug_changes_no_key(
    http: httpx.AsyncClient, auth: dict[str, str], user: str, make_endpoint: Any, servers: Stack, nc: Client
) -> None:
    ep = (await make_endpoint(llm_api_key="sk-test-secret-kept"))["endpoint"]
    taken = (await make_endpoint())["endpoint"]["slug"]
    url = f"/api/agent-endpoints/{ep['id']}"
    for key in ("sk-test-secret-never-stored", None):
        r = await http.patch(url, json={"slug": taken, "llm_api_key": key}, headers=auth)
        assert r.status_code == 409, r.text
        assert await secrets_of(servers, nc, user) == ["sk-test-secret-kept"]
    assert (await http.get(url, headers=auth)).json()["endpoint"] == ep


async def test_a_replaced_or_removed_secret_leaves_nothing_behind(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    user: str,
    make_endpoint: Any,
    workspace: dict[str, Any],
    servers: Stack,
    nc: Client,
) -> None:
    url = f"/api/agent-endpoints/{(await make_endpoint(llm_api_key='sk-test-secret-one'))['endpoint']['id']}"
    steps = [("sk-test-secret-two", ["sk-test-secret-two"]), (None, []), ("sk-test-secret-3", ["sk-test-secret-3"])]
    for key, left in steps:
        r = await http.patch(url, json={"llm_api_key": key}, headers=auth)
        assert r.status_code == 200 and r.json()["endpoint"]["has_llm_api_key"] is (key is not None)
        assert await secrets_of(servers, nc, user) == left
    assert (await http.delete(url, headers=auth)).status_code == 204
    servers_url = f"/api/workspaces/{workspace['id']}/servers"
    headers = {"Authorization": "Bearer sk-test-secret-mcp-h"}
    body = {"name": "tools", "url": "http://127.0.0.1:9/mcp", "headers": headers}
    srv = await http.post(servers_url, json=body, headers=auth)
    assert srv.status_code == 201, srv.text
    assert await secrets_of(servers, nc, user) == ['{"Authorization": "Bearer sk-test-secret-mcp-h"}']
    assert (await http.delete(f"{servers_url}/{srv.json()['server']['id']}", headers=auth)).status_code == 204
    assert await secrets_of(servers, nc, user) == []


@pytest.fixture
async def gateway(servers: Stack) -> AsyncIterator[Gateway]:
    """The gateway's container in this process, on its own broker connection (its parts are built, not started:
    only the catalog and the unit of work are used here)."""
    settings = Settings(database_url=servers.database_url, nats_url=servers.nats_url, allow_private_urls=True)
    broker = make_broker(settings, "gateway-test")
    await broker.connect()
    gateway = Gateway(settings, broker)
    yield gateway
    await gateway.close()
    await broker.stop()


async def test_what_a_change_stored_in_the_keys_service_is_removed_when_it_does_not_commit(
    gateway: Gateway, user: str, servers: Stack, nc: Client
) -> None:
    async with gateway.unit_of_work() as repo:
        ws = await gateway.catalog.create_workspace(repo, user, "Acme")
    issued: list[str] = []
    with pytest.raises(RuntimeError):
        async with gateway.unit_of_work() as repo:
            headers = {"X-Token": "sk-test-secret-mcp"}
            server = ServerCreate(name="tools", url="http://127.0.0.1:9/mcp", headers=headers)
            await gateway.catalog.register_server(repo, user, ws.id, server)
            body = EndpointCreate(
                name="never", workspace_id=ws.id, system_prompt="p", llm_api_key="sk-test-secret-never"
            )
            _, api_key = await gateway.catalog.create_endpoint(repo, user, body)
            issued.append(api_key)
            assert len(await secrets_of(servers, nc, user)) == 2  # stored while the transaction is open…
            raise RuntimeError("the transaction does not commit")
    assert await secrets_of(servers, nc, user) == []  # …and removed with it
    with pytest.raises(Unauthorized):
        await rpc.call(nc, subjects.KEYS_VERIFY, VerifyKey(api_key=issued[0]), VerifiedKey)
