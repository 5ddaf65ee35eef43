"""Client IP for rate limits: the socket peer, or the right-most untrusted X-Forwarded-For hop behind our proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentry_gateway.client_ip import TrustedProxies, client_ip, parse_ip

PROXIES = TrustedProxies.parse("10.0.0.0/8, 192.168.1.1")

public_v4 = st.ip_addresses(v=4).filter(lambda a: a.is_global)
public_v6 = st.ip_addresses(v=6).filter(lambda a: a.is_global and a.ipv4_mapped is None)
public_ip = st.one_of(public_v4, public_v6).map(str)
proxy_ip = st.ip_addresses(network="10.0.0.0/8").map(str)
junk = st.text(alphabet="0123456789abcdef.:[]% ", max_size=20)


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.7", ["1.2.3.4"], PROXIES) == "203.0.113.7"
    assert client_ip("203.0.113.7", ["1.2.3.4"], TrustedProxies()) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_hop() -> None:
    assert client_ip("10.1.2.3", ["6.6.6.6, 198.51.100.9"], PROXIES) == "198.51.100.9"
    assert client_ip("10.1.2.3", ["6.6.6.6, 198.51.100.9, 10.9.9.9, 192.168.1.1"], PROXIES) == "198.51.100.9"


def test_several_header_lines_read_as_one_list_in_order() -> None:
    assert client_ip("10.1.2.3", ["6.6.6.6", "198.51.100.9, 10.0.0.5"], PROXIES) == "198.51.100.9"


def test_a_trusted_proxy_without_a_header_is_itself_the_client() -> None:
    assert client_ip("10.1.2.3", [], PROXIES) == "10.1.2.3"
    assert client_ip("10.1.2.3", [" , "], PROXIES) == "10.1.2.3"


def test_when_every_hop_is_trusted_the_farthest_one_is_the_client() -> None:
    assert client_ip("10.1.2.3", ["10.0.0.7, 10.0.0.8"], PROXIES) == "10.0.0.7"


def test_garbage_in_the_header_stops_at_the_nearest_address_a_proxy_vouched_for() -> None:
    assert client_ip("10.1.2.3", ["198.51.100.9, not-an-ip, 10.0.0.8"], PROXIES) == "10.0.0.8"
    assert client_ip("10.1.2.3", ["unknown"], PROXIES) == "10.1.2.3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.9", "198.51.100.9"),
        (" 198.51.100.9:4711 ", "198.51.100.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:198.51.100.9", "198.51.100.9"),
        ("fe80::1%eth0", "fe80::1"),
        ('"198.51.100.9"', "198.51.100.9"),
        ("", None),
        ("unknown", None),
        ("[::1", None),
    ],
)
def test_addresses_are_read_as_proxies_write_them(text: str, expected: str | None) -> None:
    parsed = parse_ip(text)
    assert (str(parsed) if parsed else None) == expected


def test_a_malformed_trusted_proxy_list_is_refused() -> None:
    with pytest.raises(ValueError):
        TrustedProxies.parse("10.0.0.0/8, not-a-cidr")
    assert not TrustedProxies.parse(" , ")


def test_a_peer_that_is_not_an_ip_is_kept_as_given() -> None:
    assert client_ip("testclient", ["1.2.3.4"], PROXIES) == "testclient"
    assert client_ip(None, ["1.2.3.4"], PROXIES) == ""


@given(peer=public_ip, header=st.lists(st.one_of(public_ip, proxy_ip, junk), max_size=6))
def test_an_untrusted_peer_is_always_the_client_whatever_it_sends(peer: str, header: list[str]) -> None:
    assert client_ip(peer, [", ".join(header)], PROXIES) == str(ipaddress.ip_address(peer))


@given(
    spoofed=st.lists(st.one_of(public_ip, proxy_ip, junk), max_size=5),
    real=public_ip,
    chain=st.lists(proxy_ip, max_size=3),
    peer=proxy_ip,
)
def test_what_the_client_prepends_never_changes_the_answer(
    spoofed: list[str], real: str, chain: list[str], peer: str
) -> None:
    # The client controls everything left of what our first proxy appended (its own peer address).
    header = ", ".join([*spoofed, real, *chain])
    assert client_ip(peer, [header], PROXIES) == str(ipaddress.ip_address(real))
