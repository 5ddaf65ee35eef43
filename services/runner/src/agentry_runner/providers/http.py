"""The HTTP client for LLM providers: aiohttp sessions, one per destination kind, pooled for the process.

aiohttp rather than httpx (the stack's default) for this one hot path: one LLM call through httpx cost ~0.55 ms
of the runner's CPU (httpx, httpcore, anyio and h11 layers), through aiohttp ~0.16 ms — measured side by side
against the same loopback upstream. Both behave alike where it matters: no redirects are followed, platform
providers honour the proxy environment, user-supplied base URLs do not.

User-supplied (`custom`) base URLs go through the SSRF guard of `agentry_common.netguard`: host names are
resolved by `GuardedResolver`, which refuses the whole host if any address is not allowed (so the connection
can only go to a checked address, whatever DNS answers next), and IP literals — which aiohttp connects to
without asking a resolver — are checked by a client middleware, which sees every request, redirects included.
"""

from __future__ import annotations

import functools
import socket
from ipaddress import ip_address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_middlewares import ClientHandlerType, ClientMiddlewareType
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from agentry_common.netguard import UrlNotAllowed, address_allowed, allowed_addresses

LIMIT = 256  # connections per session (keep-alive pool), as the runner's concurrency allows


class GuardedResolver(AbstractResolver):
    """Resolves host names and refuses any that resolve to an address the deployment does not allow."""

    def __init__(self, *, allow_private: bool):
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await allowed_addresses(host, port, allow_private=self.allow_private)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _literal_guard(allow_private: bool) -> ClientMiddlewareType:
    """A client middleware: it runs for each request aiohttp sends, every redirect hop included."""

    async def check(request: aiohttp.ClientRequest, handler: ClientHandlerType) -> aiohttp.ClientResponse:
        host = (request.url.host or "").strip("[]")
        if not _literal_allowed(host, allow_private):  # a name is checked by the resolver, an address here
            raise UrlNotAllowed(f"host {host!r} is an address that is not allowed")
        return await handler(request)

    return check


@functools.lru_cache(maxsize=4096)
def _literal_allowed(host: str, allow_private: bool) -> bool:
    """False for an IP literal the deployment does not allow; True for an allowed one and for a name. Kept per
    host: parsing and checking the address cost ~10 µs, on every LLM call to an address."""
    try:
        address = ip_address(host)
    except ValueError:
        return True
    return address_allowed(address, allow_private=allow_private)


def platform_session() -> aiohttp.ClientSession:
    """For the platform's own providers (OpenAI, Groq, Anthropic, Gemini); their proxy comes from `env_proxy`.
    No cookie jar in either session: one is shared by every owner's runs, and a cookie one run's upstream set
    must not ride along with another's (nor cost a jar lookup on every call)."""
    connector = aiohttp.TCPConnector(limit=LIMIT)
    jar = aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, cookie_jar=jar)


@functools.lru_cache(maxsize=64)
def env_proxy(base_url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) names for a platform provider's base URL,
    read once per URL with aiohttp's own rules. (`trust_env=True` read them, and `.netrc`, in two thread-pool
    hops on every request: ~250 µs of CPU per LLM call. `.netrc` credentials are not wanted: the call carries
    the provider's key.)"""
    try:
        return get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None


def guarded_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """For user-supplied base URLs: every connection to a checked address, never through a proxy."""
    connector = aiohttp.TCPConnector(limit=LIMIT, resolver=GuardedResolver(allow_private=allow_private))
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, middlewares=(_literal_guard(allow_private),),
        cookie_jar=aiohttp.DummyCookieJar(),
    )  # fmt: skip
