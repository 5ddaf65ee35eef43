"""The limiter's windows, kept by NATS: one memory stream per scope (see the package's docstring)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import nats.errors
import orjson
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError
from prometheus_client import Counter, Histogram

from agentry_common.errors import RateLimited, ServiceUnavailable

from ..settings import Settings
from .decision import Admission, Decision, Scope, Window, client_key, subject_token, tighter

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
_NATS_FAILURES = (nats.errors.Error, asyncio.TimeoutError, OSError)


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
        # Window reads not yet sent, by (stream, subject): admissions counted before one is sent share it.
        self._reads: dict[tuple[str, str], asyncio.Task[Window | None]] = {}

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
        endpoint = subject_token(endpoint_id)
        checks = [(self.endpoint, self.endpoint.subject(endpoint))]
        if public:  # the narrower scope first, so an address over its limit never takes an endpoint slot
            checks.insert(0, (self.client_ip, self.client_ip.subject(endpoint, client_key(client_ip))))
        if key_id is not None and key_limit is not None:  # likewise, a key over its own limit takes nothing else
            try:
                scope = await self._key_scope(key_limit)
            except LimiterUnavailable as err:
                return Admission.known(self._unavailable(endpoint_id, self.endpoint, err))
            checks.insert(0, (scope, scope.subject(subject_token(key_id))))
        return await self._decide(endpoint_id, checks)

    async def start_test(self, endpoint_id: str) -> Admission:
        return await self._decide(endpoint_id, [(self.test_run, self.test_run.subject(subject_token(endpoint_id)))])

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
        reads = [self._read_soon(scope, subject) for scope, subject in checks]
        return Admission(asyncio.ensure_future(self._headers(checks, reads)))

    def _read_soon(self, scope: ScopeStream, subject: str) -> asyncio.Task[Window | None]:
        """The window read that will count this admission: the one of this subject not yet sent, if any (so
        under load the admissions a gateway hears in one turn of its loop share one read), else a new one.
        A read is sent when its task first runs, so every admission that joined it was stored before."""
        key = (scope.stream, subject)
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._shared_read(key, scope, subject))
        return read

    async def _shared_read(self, key: tuple[str, str], scope: ScopeStream, subject: str) -> Window | None:
        del self._reads[key]  # sent now: a later admission needs a later read
        return await self._window(scope, subject)

    async def _headers(
        self, checks: list[tuple[ScopeStream, str]], reads: list[asyncio.Task[Window | None]]
    ) -> Decision:
        # Shielded: one caller giving up (its request cancelled) must not cancel a read others share.
        windows = await asyncio.gather(*(asyncio.shield(read) for read in reads))
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
