"""The endpoint cache on the run path, against the real catalog in PostgreSQL: requests that find an entry
gone share one lookup, and a change announced during a lookup is not undone by caching its result."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from agentry_common import subjects
from agentry_common.db import make_engine, make_sessionmaker
from agentry_common.errors import NotFound
from agentry_common.events import CatalogChanged
from agentry_dev.stack import Stack
from agentry_gateway.catalog_cache import EndpointCache


class CountingSessions:
    """The real sessionmaker, counting the sessions (one per catalog lookup) it opens."""

    def __init__(self, sessions: Any):
        self.sessions = sessions
        self.opened = 0

    def __call__(self) -> Any:
        self.opened += 1
        return self.sessions()


@pytest.fixture
async def sessions(servers: Stack) -> AsyncIterator[CountingSessions]:
    engine = make_engine(servers.database_url, pool_size=2)
    yield CountingSessions(make_sessionmaker(engine))
    await engine.dispose()


async def test_requests_that_find_the_entry_gone_share_one_lookup(make_endpoint, sessions, nc: Client) -> None:
    created = await make_endpoint()
    slug = created["endpoint"]["slug"]
    cache = EndpointCache(sessions, nc, ttl_s=60)  # type: ignore[arg-type]

    found = await asyncio.gather(*(cache.by_slug(slug) for _ in range(50)))

    assert sessions.opened == 1
    assert {e.snapshot.id for e in found} == {created["endpoint"]["id"]}
    await cache.by_slug(slug)
    assert sessions.opened == 1  # and then it is cached


async def test_an_unknown_slug_is_404_for_every_request_waiting_on_its_lookup(sessions, nc: Client) -> None:
    cache = EndpointCache(sessions, nc, ttl_s=60)  # type: ignore[arg-type]
    results = await asyncio.gather(*(cache.by_slug("no-such-slug") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, NotFound) for r in results)
    assert sessions.opened == 1
    with pytest.raises(NotFound):
        await cache.by_slug("no-such-slug")  # a miss is not cached: the slug may be created any moment
    assert sessions.opened == 2


async def test_a_lookup_that_straddles_a_change_is_not_cached(make_endpoint, sessions, nc: Client) -> None:
    created = await make_endpoint()
    slug = created["endpoint"]["slug"]
    cache = EndpointCache(sessions, nc, ttl_s=60)  # type: ignore[arg-type]

    lookup = asyncio.create_task(cache.by_slug(slug))
    await asyncio.sleep(0)  # the lookup has started reading…
    cache.forget(endpoint_id=created["endpoint"]["id"])  # …when the endpoint changes
    await lookup

    await cache.by_slug(slug)
    assert sessions.opened == 2  # read again: the first result may predate the change


async def _lookups(http: httpx.AsyncClient, gateway_url: str) -> dict[str, float]:
    text = (await http.get(f"{gateway_url}/metrics")).text
    found = re.findall(r'^agentry_gateway_endpoint_lookups_total\{cache="(hit|miss)"\} ([0-9.e+]+)$', text, re.M)
    return {cache: float(value) for cache, value in found}


async def test_a_catalog_changed_broadcast_drops_the_entry_and_a_malformed_one_is_ignored(
    make_endpoint, nc: Client, http: httpx.AsyncClient, gateway_url: str
) -> None:
    """Through a running gateway's bus entrypoint (`entrypoints/broker.py`): its cache is read on every run
    request, before the key is checked, so a request with a malformed key is a lookup and nothing more."""
    created = await make_endpoint()
    endpoint_id = created["endpoint"]["id"]

    async def lookup() -> str:
        before = await _lookups(http, gateway_url)
        r = await http.post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": "not-a-key"})
        assert r.status_code == 401, r.text
        after = await _lookups(http, gateway_url)
        (result,) = [cache for cache in ("hit", "miss") if after.get(cache, 0) > before.get(cache, 0)]
        return result

    await lookup()
    assert await lookup() == "hit"

    await nc.publish(subjects.CATALOG_CHANGED, b'{"endpoint_id": ["not", "an", "id"]}')
    await nc.publish(subjects.CATALOG_CHANGED, CatalogChanged(endpoint_id="aep_other").model_dump_json().encode())
    await nc.flush()
    await asyncio.sleep(0.2)
    assert await lookup() == "hit"  # still cached: neither message was about it

    await nc.publish(subjects.CATALOG_CHANGED, CatalogChanged(endpoint_id=endpoint_id).model_dump_json().encode())
    await nc.flush()
    await asyncio.sleep(0.2)
    assert await lookup() == "miss"
