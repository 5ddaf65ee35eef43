"""The SSRF guard (libs/common netguard, owned with the runner): private and loopback addresses only when
allowed, link-local and cloud metadata never, checked on the resolved address, for every connection."""

from __future__ import annotations

import asyncio

import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from agentry_common.errors import UpstreamFailed
from agentry_common.netguard import UrlNotAllowed, address_allowed, check_url, guard_transport
from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message
from agentry_runner.providers.http import guarded_session


@pytest.mark.parametrize(
    ("address", "private_ok", "public_only"),
    [
        ("8.8.8.8", True, True),
        ("2606:4700:4700::1111", True, True),
        ("127.0.0.1", True, False),
        ("::1", True, False),
        ("10.1.2.3", True, False),
        ("192.168.0.10", True, False),
        ("100.64.0.1", True, False),
        ("0.0.0.0", True, False),
        ("169.254.169.254", False, False),
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),
        ("::ffff:169.254.169.254", False, False),
        ("64:ff9b::a9fe:a9fe", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_which_addresses_are_allowed(address, private_ok, public_only):
    assert address_allowed(address, allow_private=True) is private_ok
    assert address_allowed(address, allow_private=False) is public_only


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/mcp",
        "http://localhost/mcp",
        "http://2130706433/",  # 127.0.0.1 spelled as a number: caught after resolution
        "http://[::1]/",
        "http://user:secret@127.0.0.1/",
    ],
)
async def test_loopback_urls_are_refused_unless_allowed(url):
    await check_url(url, allow_private=True)
    with pytest.raises(UrlNotAllowed) as refused:
        await check_url(url, allow_private=False)
    assert refused.value.code == "url_not_allowed" and refused.value.status_code == 422
    assert "secret" not in refused.value.message


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "ftp://example.com", "http:///x", "nope"])
async def test_metadata_and_malformed_urls_are_always_refused(url):
    with pytest.raises(UrlNotAllowed):
        await check_url(url, allow_private=True)


async def test_unresolvable_hosts_are_refused_at_registration():
    with pytest.raises(UrlNotAllowed, match="cannot be resolved"):
        await check_url("http://no-such-host.invalid/", allow_private=True)


async def test_guarded_clients_refuse_the_connection_itself(fake_llm):
    guarded = guard_transport(httpx.AsyncHTTPTransport(trust_env=False), allow_private=False)
    async with httpx.AsyncClient(transport=guarded) as client:
        with pytest.raises(UrlNotAllowed):
            await client.get(f"{fake_llm.url}/anything")
    guarded2 = guard_transport(httpx2.AsyncHTTPTransport(trust_env=False), allow_private=False)
    async with httpx2.AsyncClient(transport=guarded2) as client:
        with pytest.raises(UrlNotAllowed):
            await client.get(f"{fake_llm.url}/anything")
    allowed = guard_transport(httpx.AsyncHTTPTransport(trust_env=False), allow_private=True)
    async with httpx.AsyncClient(transport=allowed) as client:
        assert (await client.get(f"{fake_llm.url}/anything")).status_code == 404


async def test_a_redirect_to_a_refused_address_is_not_followed(serve_app):
    async def go(_: Request) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data", status_code=307)

    url, stop = await serve_app(Starlette(routes=[Route("/go", go)]))
    try:
        guarded = guard_transport(httpx.AsyncHTTPTransport(trust_env=False), allow_private=True)
        async with httpx.AsyncClient(transport=guarded, follow_redirects=True) as client:
            with pytest.raises(UrlNotAllowed):
                await client.get(f"{url}/go")
    finally:
        await stop()


# The runner's LLM client for user-supplied base URLs (aiohttp): the same guard, names and literals alike.


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_guarded_llm_session_refuses_loopback_unless_allowed(fake_llm, host):
    port = fake_llm.url.rsplit(":", 1)[1]
    async with guarded_session(allow_private=False) as session:
        with pytest.raises(UrlNotAllowed):
            await session.get(f"http://{host}:{port}/anything")
    async with guarded_session(allow_private=True) as session:
        if host == "[::1]":
            return  # the fake LLM listens on IPv4 only: allowed, but nobody answers there
        async with session.get(f"http://{host}:{port}/anything") as resp:
            assert resp.status == 404


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://[::ffff:169.254.169.254]/"]
)
async def test_the_guarded_llm_session_never_reaches_link_local_addresses(url):
    async with guarded_session(allow_private=True) as session:
        with pytest.raises(UrlNotAllowed):
            await session.get(url)


async def test_the_guarded_llm_session_checks_every_redirect(serve_app):
    async def go(_: Request) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data", status_code=307)

    url, stop = await serve_app(Starlette(routes=[Route("/go", go)]))
    try:
        async with guarded_session(allow_private=True) as session:
            with pytest.raises(UrlNotAllowed):
                await session.get(f"{url}/go")  # aiohttp follows redirects by default; the runner does not
    finally:
        await stop()


async def test_a_custom_base_url_on_a_refused_address_fails_the_call_with_url_not_allowed():
    async with guarded_session(allow_private=False) as session:
        conn = Connection(session, "http://127.0.0.1:9/v1", None, timeout_s=2, max_retries=0)
        request = ChatRequest("m", "system", [Message("user", "hi")], [], 10, 0.0)
        with pytest.raises(UpstreamFailed) as failed:
            await PROVIDERS["custom"].complete(request, conn, asyncio.get_running_loop().time() + 5)
    assert failed.value.code == "url_not_allowed"
