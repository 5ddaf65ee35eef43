"""Run rate limits, exact across every gateway replica: a sliding-window log per key, kept by NATS.

Each scope is a JetStream stream (memory storage) with `max_msgs_per_subject = limit`, `discard: new` per
subject and `max_age = window`. An admission is an empty message on the key's subject: the stream refuses
the (limit+1)-th message inside any window — its leader orders every write, so N replicas cannot overshoot —
and each admission expires exactly one window after it was made. That is a true sliding window (never more
than `limit` in any window-long interval, no burst across a boundary), decided in one round trip with no
compare-and-set retries; a second round trip reads the window (count, oldest admission) for the headers,
while the run is being dispatched (`Admission`), so it adds no latency.
bench/ratelimit.py measures this against KV compare-and-set (GCRA) and counter streams.

A caller key with its own `rate_limit_per_minute` adds a key scope, checked first. Its limit is the key's, and a
stream's per-subject limit is the stream's, so there is one key stream per limit value in use (`…_KEY_<limit>`),
declared on first use: the same exact window, whatever the limit.

A public run must pass the client-IP scope, then the endpoint scope; a slot taken in the first is handed
back when the second refuses, so a refused request consumes no quota (an address over its own limit never
eats into the endpoint's). The limit state is ephemeral: a standalone NATS restart forgets the windows (the
streams are recreated on first use); on an R3 cluster they survive a server loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NoReturn

import nats.errors
import orjson
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError
from prometheus_client import Counter, Histogram

from agentry_common.errors import AgentryError, RateLimited, ServiceUnavailable

from .client_ip import parse_ip
from .settings import Settings

log = logging.getLogger(__name__)

REFUSALS = Counter(
    # By scope only: an endpoint id label would make one series per endpoint (unbounded); owners see their 429s.
    "agentry_rate_limit_refusals_total",
    "Run requests refused for a rate limit",
    ["scope"],
)
LIMITER_ERRORS = Counter(
    "agentry_rate_limiter_errors_total", "Failed rate-limiter operations against NATS", ["operation"]
)
UNCHECKED = Counter(
    "agentry_rate_limiter_unavailable_total", "Runs decided without the limiter (NATS unreachable)", ["mode"]
)
DECISION_SECONDS = Histogram(
    "agentry_rate_limit_decision_seconds",
    "Time the rate limiter adds to a run request",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

_REFUSED = "maximum messages per subject exceeded"  # the stream's answer to the (limit+1)-th admission
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NATS_FAILURES = (nats.errors.Error, asyncio.TimeoutError, OSError)


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


def _token(value: str) -> str:
    """A subject token: the value itself when it is safe, else a digest (ids never contain dots)."""
    return value if _TOKEN.fullmatch(value) else "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


def client_key(ip: str) -> str:
    """The client-IP scope's key: an IPv4 address, or an IPv6 /64 (one subscriber's usual allocation)."""
    addr = parse_ip(ip)
    if addr is None:
        return _token(ip or "unknown")
    if addr.version == 6:
        return f"v6_{int(addr) >> 64:016x}"
    return "v4_" + str(addr).replace(".", "-")


class LimiterUnavailable(Exception):
    """NATS could not answer; the caller fails closed or open."""


@dataclass(frozen=True)
class ScopeStream:
    scope: Scope
    stream: str
    prefix: str
    limit: int

    def subject(self, *keys: str) -> str:
        return ".".join((self.prefix, *keys))


class Limits:
    """The three run scopes: per endpoint (all modes), per client IP per endpoint (public), test runs."""

    def __init__(
        self,
        nc: Client,
        *,
        per_endpoint: int = 60,
        per_client_ip: int = 20,
        test_runs: int = 10,
        window_s: float = 60.0,
        fail_open: bool = False,
        timeout_s: float = 2.0,
        replicas: int = 1,
        namespace: str = "RATELIMIT",
    ):
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", namespace):
            raise ValueError("namespace must be upper-case letters, digits and underscores")
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout_s)
        self.window_s = window_s
        self.fail_open = fail_open
        self.timeout_s = timeout_s
        self.replicas = replicas
        lower = namespace.lower()
        limits = {Scope.ENDPOINT: per_endpoint, Scope.CLIENT_IP: per_client_ip, Scope.TEST_RUN: test_runs}
        self.endpoint, self.client_ip, self.test_run = (
            ScopeStream(scope, f"{namespace}_{scope.upper()}", f"{lower}.{scope}", limit)
            for scope, limit in limits.items()
        )
        self._namespace = namespace
        self._key_scopes: dict[int, ScopeStream] = {}  # by limit, declared on first use
        self._generation = 0  # bumped each time the streams are (re)declared
        self._declaring = asyncio.Lock()
        self._last_warning = -math.inf
        self._unwarned = 0

    @classmethod
    def from_settings(cls, nc: Client, settings: Settings) -> Limits:
        return cls(
            nc,
            per_endpoint=settings.rate_limit_per_endpoint,
            per_client_ip=settings.rate_limit_per_client_ip,
            test_runs=settings.rate_limit_test_runs,
            window_s=settings.rate_limit_window_s,
            fail_open=settings.rate_limit_fail_open,
            timeout_s=settings.rate_limit_timeout_s,
            replicas=settings.stream_replicas,
        )

    @property
    def scopes(self) -> tuple[ScopeStream, ...]:
        return (self.endpoint, self.client_ip, self.test_run, *self._key_scopes.values())

    async def _key_scope(self, limit: int) -> ScopeStream:
        """The key stream for this limit, declared the first time this process meets the limit."""
        scope = self._key_scopes.get(limit)
        if scope is None:
            scope = ScopeStream(
                Scope.KEY, f"{self._namespace}_KEY_{limit}", f"{self._namespace.lower()}.key.l{limit}", limit
            )
            async with self._declaring:
                if limit not in self._key_scopes:
                    try:
                        await self._declare_one(scope)
                    except _NATS_FAILURES as err:
                        raise self._failed("declare", err) from None
                    self._key_scopes[limit] = scope
        return scope

    async def start(self) -> None:
        """Declare the streams; the last replica to start sets the limits every replica enforces."""
        await self._declare()

    async def admit_run(self, endpoint_id: str, public: bool, client_ip: str) -> Decision:
        return await (await self.start_run(endpoint_id, public, client_ip)).decision()

    async def admit_test(self, endpoint_id: str) -> Decision:
        return await (await self.start_test(endpoint_id)).decision()

    async def start_run(
        self, endpoint_id: str, public: bool, client_ip: str, key_id: str | None = None, key_limit: int | None = None
    ) -> Admission:
        """Admit a run (or raise RateLimited); its headers are read while the caller dispatches the run."""
        endpoint = _token(endpoint_id)
        checks = [(self.endpoint, self.endpoint.subject(endpoint))]
        if public:  # the narrower scope first, so an address over its limit never takes an endpoint slot
            checks.insert(0, (self.client_ip, self.client_ip.subject(endpoint, client_key(client_ip))))
        if key_id is not None and key_limit is not None:  # likewise, a key over its own limit takes nothing else
            try:
                scope = await self._key_scope(key_limit)
            except LimiterUnavailable as err:
                return Admission.known(self._unavailable(endpoint_id, self.endpoint, err))
            checks.insert(0, (scope, scope.subject(_token(key_id))))
        return await self._decide(endpoint_id, checks)

    async def start_test(self, endpoint_id: str) -> Admission:
        return await self._decide(endpoint_id, [(self.test_run, self.test_run.subject(_token(endpoint_id)))])

    async def _decide(self, endpoint_id: str, checks: list[tuple[ScopeStream, str]]) -> Admission:
        started = time.perf_counter()
        outcome = "admitted"
        try:
            return await self._admit(endpoint_id, checks)
        except RateLimited:
            outcome = "refused"
            raise
        except LimiterUnavailable as err:
            outcome = "unavailable"
            return Admission.known(self._unavailable(endpoint_id, checks[-1][0], err))
        finally:
            DECISION_SECONDS.labels(outcome).observe(time.perf_counter() - started)

    async def _admit(self, endpoint_id: str, checks: list[tuple[ScopeStream, str]]) -> Admission:
        taken: list[tuple[ScopeStream, int]] = []
        try:
            for scope, subject in checks:
                seq = await self._take(scope, subject)
                if seq is None:
                    await self._give_back(taken)
                    await self._refuse(endpoint_id, scope, subject)
                taken.append((scope, seq))
        except LimiterUnavailable:
            await self._give_back(taken)
            raise
        # The window read (for the headers) need not delay the run: it starts now, after the admission it
        # must count, and goes out in the same write as the caller's next NATS messages.
        return Admission(asyncio.ensure_future(self._headers(checks)))

    async def _headers(self, checks: list[tuple[ScopeStream, str]]) -> Decision:
        windows = await asyncio.gather(*(self._window(scope, subject) for scope, subject in checks))
        now = time.time()
        return tighter(
            [
                w.decision(now) if w else Decision(scope.limit, scope.limit - 1, math.ceil(self.window_s))
                for (scope, _), w in zip(checks, windows, strict=True)
            ]
        )

    async def _take(self, scope: ScopeStream, subject: str, retry: bool = True) -> int | None:
        """One admission into the key's window: its stream sequence, or None when the window is full."""
        generation = self._generation
        try:
            # No Nats-Expected-Stream header: stored with every admission, and a stream owns its subjects anyway.
            ack = await self.js.publish(subject, b"", timeout=self.timeout_s)
        except APIError as err:
            if err.description and _REFUSED in err.description:
                return None
            if err.err_code != _STREAM_NOT_FOUND or not retry:
                raise self._failed("admit", err) from None
        except NoStreamResponseError as err:  # the streams are gone (a standalone NATS restarted)
            if not retry:
                raise self._failed("admit", err) from None
        except _NATS_FAILURES as err:
            raise self._failed("admit", err) from None
        else:
            return ack.seq
        await self._redeclare(generation)
        return await self._take(scope, subject, retry=False)

    async def _window(self, scope: ScopeStream, subject: str) -> Window | None:
        """The key's window read with one direct get: its oldest admission, and how many follow it."""
        request = orjson.dumps({"next_by_subj": subject, "batch": 1})
        try:
            msg = await self.nc.request(f"$JS.API.DIRECT.GET.{scope.stream}", request, timeout=self.timeout_s)
        except _NATS_FAILURES as err:
            self._failed("window", err)
            return None
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return Window(scope.limit, self.window_s, 0, None)
        stamp = headers.get("Nats-Time-Stamp")
        if status or not stamp:
            self._failed("window", RuntimeError(f"direct get answered {status}"))
            return None
        count = 1 + int(headers.get("Nats-Num-Pending", "0"))
        return Window(scope.limit, self.window_s, count, datetime.fromisoformat(stamp).timestamp())

    async def _give_back(self, taken: list[tuple[ScopeStream, int]]) -> None:
        """Best effort: a slot that cannot be handed back expires with its window."""
        for scope, seq in taken:
            request = orjson.dumps({"seq": seq, "no_erase": True})
            try:
                await self.nc.request(f"$JS.API.STREAM.MSG.DELETE.{scope.stream}", request, timeout=self.timeout_s)
            except _NATS_FAILURES as err:
                self._failed("give_back", err)

    async def _refuse(self, endpoint_id: str, scope: ScopeStream, subject: str) -> NoReturn:
        window = await self._window(scope, subject)
        retry_after = window.next_slot_in(time.time()) if window else math.ceil(self.window_s)
        REFUSALS.labels(scope.scope.value).inc()
        what = {
            Scope.ENDPOINT: "runs per endpoint",
            Scope.CLIENT_IP: "runs per client address on this endpoint",
            Scope.TEST_RUN: "test runs per endpoint",
            Scope.KEY: "runs for this API key",
        }[scope.scope]
        per = "minute" if self.window_s == 60 else f"{self.window_s:g} seconds"
        headers = {**Decision(scope.limit, 0, retry_after).headers(), "Retry-After": str(retry_after)}
        raise RateLimited(
            f"rate limit exceeded: {scope.limit} {what} per {per}; retry in {retry_after} s",
            code="rate_limited",
            headers=headers,
        )

    def _unavailable(self, endpoint_id: str, scope: ScopeStream, err: LimiterUnavailable) -> Decision:
        mode = "fail_open" if self.fail_open else "fail_closed"
        UNCHECKED.labels(mode).inc()
        self._warn(f"rate limiter unavailable ({err}); runs are {'admitted' if self.fail_open else 'refused'}")
        if self.fail_open:  # nothing was counted, so nothing is known about the window
            return Decision(scope.limit, scope.limit, math.ceil(self.window_s))
        raise ServiceUnavailable(
            "rate limits cannot be checked right now; nothing was started", code="rate_limiter_unavailable"
        )

    def _failed(self, operation: str, err: BaseException) -> LimiterUnavailable:
        LIMITER_ERRORS.labels(operation).inc()
        log.debug("rate limiter %s failed: %s", operation, type(err).__name__)
        return LimiterUnavailable(f"{operation}: {type(err).__name__}")

    def _warn(self, message: str) -> None:
        """One warning per 5 s per process while NATS is away, with how many were folded into it."""
        now = time.monotonic()
        if now - self._last_warning < 5:
            self._unwarned += 1
            return
        log.warning("%s (%d more since the last warning)", message, self._unwarned)
        self._last_warning, self._unwarned = now, 0

    def _config(self, scope: ScopeStream) -> StreamConfig:
        return StreamConfig(
            name=scope.stream,
            subjects=[scope.subject(*["*"] * (2 if scope.scope is Scope.CLIENT_IP else 1))],
            description=f"Rate-limit windows ({scope.scope}): one empty message per admission.",
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.MEMORY,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
            max_msgs_per_subject=scope.limit,
            max_age=self.window_s,
            num_replicas=self.replicas,
            allow_direct=True,
        )

    async def _declare_one(self, scope: ScopeStream) -> None:
        config = self._config(scope)
        try:
            await self.js.add_stream(config)
        except BadRequestError as err:
            if err.err_code != _STREAM_NAME_IN_USE:
                raise
            await self.js.update_stream(config)

    async def _declare(self) -> None:
        for scope in self.scopes:
            await self._declare_one(scope)
        self._generation += 1

    async def _redeclare(self, seen_generation: int) -> None:
        """Recreate lost streams once for all the requests that noticed at the same time."""
        async with self._declaring:
            if self._generation != seen_generation:
                return
            try:
                await self._declare()
            except _NATS_FAILURES as err:
                raise self._failed("declare", err) from None
