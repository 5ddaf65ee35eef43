"""What the limiter decides and tells the caller: the scopes, a window's state, the X-RateLimit-* headers, and
the client-IP scope's key. Pure: no NATS here (`limits` keeps the windows)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum

from agentry_common.errors import AgentryError

from ..client_ip import parse_ip

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Scope(StrEnum):
    ENDPOINT = "endpoint"
    CLIENT_IP = "client_ip"
    TEST_RUN = "test_run"
    KEY = "key"


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }

    @contextmanager
    def on_errors(self) -> Iterator[None]:
        """An error answered after the limit check carries the X-RateLimit-* headers too."""
        try:
            yield
        except AgentryError as err:
            err.headers = {**self.headers(), **err.headers}
            raise


class Admission:
    """An admitted request; its Decision (the headers) is being read from the windows meanwhile."""

    def __init__(self, pending: asyncio.Future[Decision]):
        self._pending = pending

    @classmethod
    def known(cls, decision: Decision) -> Admission:
        done: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        done.set_result(decision)
        return cls(done)

    async def decision(self) -> Decision:
        return await self._pending

    @asynccontextmanager
    async def on_errors(self) -> AsyncIterator[None]:
        """An error answered after the limit check carries the X-RateLimit-* headers too."""
        try:
            yield
        except AgentryError as err:
            err.headers = {**(await self.decision()).headers(), **err.headers}
            raise
        except BaseException:
            self._pending.cancel()  # nobody will answer: don't leave the read behind
            raise


def seconds_until(at: float, now: float, window_s: float) -> int:
    """Whole seconds from `now` until `at`, rounded up: at least 1, at most the window (clocks drift)."""
    return max(1, min(math.ceil(window_s), math.ceil(at - now)))


@dataclass(frozen=True)
class Window:
    """One key's sliding window as its stream holds it: the admissions still inside it, and the oldest."""

    limit: int
    window_s: float
    count: int
    oldest_at: float | None  # epoch seconds

    def next_slot_in(self, now: float) -> int:
        """Seconds until one more admission fits: now (1) while there is room, else when the oldest expires."""
        if self.count < self.limit or self.oldest_at is None:
            return 1
        return seconds_until(self.oldest_at + self.window_s, now, self.window_s)

    def decision(self, now: float) -> Decision:
        """Headers for a request counted in this window; Reset is when Remaining next grows."""
        remaining = max(0, self.limit - self.count)
        if self.oldest_at is None:
            return Decision(self.limit, remaining, math.ceil(self.window_s))
        return Decision(self.limit, remaining, seconds_until(self.oldest_at + self.window_s, now, self.window_s))


def tighter(decisions: list[Decision]) -> Decision:
    """The decision a client should heed: fewest remaining, then the longest wait."""
    return min(decisions, key=lambda d: (d.remaining, -d.reset_s))


def subject_token(value: str) -> str:
    """A subject token: the value itself when it is safe, else a digest (ids never contain dots)."""
    return value if _TOKEN.fullmatch(value) else "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


def client_key(ip: str) -> str:
    """The client-IP scope's key: an IPv4 address, or an IPv6 /64 (one subscriber's usual allocation)."""
    addr = parse_ip(ip)
    if addr is None:
        return subject_token(ip or "unknown")
    if addr.version == 6:
        return f"v6_{int(addr) >> 64:016x}"
    return "v4_" + str(addr).replace(".", "-")
