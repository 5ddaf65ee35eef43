"""SSRF guard for user-supplied URLs (MCP servers, `custom` LLM base URLs).

A URL is refused when any address its host resolves to is not allowed:
- link-local (169.254.0.0/16, fe80::/10), known cloud-metadata addresses and multicast: always refused;
- private, loopback, shared (CGNAT), unspecified and other non-global addresses: refused unless the
  deployment allows private URLs (`ALLOW_PRIVATE_URLS=true` in development and tests).

Registration-time checks call `check_url`. At run time every connection goes through the same check, so DNS
rebinding and redirects (each redirect opens its connection through it) cannot slip past: `guard_transport`
makes an httpx / httpx2 transport (MCP servers) resolve every host itself, check the addresses and connect to
the checked address; the runner's aiohttp session for `custom` base URLs does the same with a resolver built
on `allowed_addresses` and `address_allowed` (`agentry_runner.providers.http`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from .errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS/GCP/Azure/OpenStack metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside the ULA range, so private-allowed otherwise)
        "100.100.100.200/32",  # Alibaba Cloud metadata (inside CGNAT space)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlNotAllowed(ValidationFailed):
    """A refused URL. The message names the host, never the whole URL: it may carry credentials."""

    code = "url_not_allowed"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one tunnels to (mapped, NAT64, 6to4), which is where packets really go."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_allowed(address: str | IPAddress, *, allow_private: bool) -> bool:
    """Whether a connection to this IP address is allowed."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if ip.is_link_local or ip.is_multicast or any(ip in net for net in ALWAYS_REFUSED):
        return False
    return allow_private or ip.is_global


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself), in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for *_, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]).split("%", 1)[0], None)
    return list(seen)


async def allowed_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve `host` and return its addresses, or raise `UrlNotAllowed` if any of them is refused.

    A host with one refused address is refused as a whole: mixing a public and a metadata address is a
    rebinding trick, not a configuration anyone needs. Resolution failures propagate as `OSError`.
    """
    addresses = await resolve(host.strip("[]"), port)
    refused = [a for a in addresses if not address_allowed(a, allow_private=allow_private)]
    if refused:
        raise UrlNotAllowed(f"host {host!r} resolves to an address that is not allowed ({refused[0]})")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Registration-time check of a user-supplied http(s) URL; raises `UrlNotAllowed` (422)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise UrlNotAllowed("the URL is malformed") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("the URL must be http(s) with a host")
    try:
        await allowed_addresses(parts.hostname, port, allow_private=allow_private)
    except (OSError, UnicodeError) as err:  # UnicodeError: no IDNA form (an empty or 64+ character label, `a..b`)
        raise UrlNotAllowed(f"host {parts.hostname!r} cannot be resolved") from err


class GuardedNetworkBackend:
    """An httpcore / httpcore2 network backend that connects only to checked addresses.

    It resolves the host itself and hands the checked IP to the wrapped backend; TLS still verifies the
    certificate against the original host name (httpcore passes it to `start_tls` separately).
    """

    def __init__(self, inner: Any, *, allow_private: bool):
        self.inner = inner
        self.allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        addresses = await allowed_addresses(host, port, allow_private=self.allow_private)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except Exception as err:  # the backend's ConnectError / ConnectTimeout: try the next address
                last = err
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Any = None,
    ) -> Any:
        raise UrlNotAllowed("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guard_transport(transport: Any, *, allow_private: bool) -> Any:
    """Make an `httpx.AsyncHTTPTransport` (or httpx2's) connect through `GuardedNetworkBackend`.

    Build the transport with `trust_env=False` and no proxy: through a proxy the guard would check the
    proxy's address instead of the target's.
    """
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):
        raise TypeError("transport has no connection pool to guard (is a proxy configured?)")
    pool._network_backend = GuardedNetworkBackend(pool._network_backend, allow_private=allow_private)
    return transport
