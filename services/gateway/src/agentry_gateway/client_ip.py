"""Which client a run request comes from: the socket peer, or what our own trusted proxies say it is.

`X-Forwarded-For` is a list every proxy appends to, so only its right end is trustworthy: walking it from
the right past our trusted proxies, the first address that is not one of them is the client. Anything to
its left was written by the client itself. A header from a peer that is not a trusted proxy is ignored.

The socket peer must be the real one: uvicorn's own X-Forwarded-For handling (on by default for loopback
peers) has to be off for the gateway (`--no-proxy-headers`), or it would rewrite the peer before we see it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from starlette.requests import Request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::ffff:1.2.3.4`), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):  # `[v6]` or `[v6]:port`
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:  # `v4:port`; bare IPv6 has at least two colons
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """The CIDRs whose `X-Forwarded-For` we believe (the deployment's own load balancers)."""

    def __init__(self, networks: Iterable[IPNetwork] = ()):
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Comma-separated CIDRs or addresses; a malformed entry is a configuration error (ValueError)."""
        return cls(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())

    def __contains__(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: TrustedProxies) -> str:
    """The client's address as text; the peer as given when it is not an IP (never empty unless it is)."""
    peer_addr = parse_ip(peer) if peer else None
    if peer_addr is None:
        return peer or ""
    if peer_addr not in trusted:
        return str(peer_addr)
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    nearest = peer_addr
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:
            # A trusted proxy would have written an address: garbage here came from the client, and the
            # nearest address a trusted hop vouched for is the best we know.
            break
        if addr not in trusted:
            return str(addr)
        nearest = addr
    return str(nearest)


@lru_cache(maxsize=8)
def _trusted(text: str) -> TrustedProxies:
    return TrustedProxies.parse(text)


def client_ip_of(request: Request, trusted_proxies: str) -> str:
    """The client address of an HTTP request, given the `TRUSTED_PROXIES` setting."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), _trusted(trusted_proxies))
