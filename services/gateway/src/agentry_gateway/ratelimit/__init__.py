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

from .decision import Admission, Decision, Scope, Window, client_key, seconds_until, tighter
from .limits import DECISION_SECONDS, LIMITER_ERRORS, REFUSALS, UNCHECKED, LimiterUnavailable, Limits, ScopeStream

__all__ = [
    "DECISION_SECONDS",
    "LIMITER_ERRORS",
    "REFUSALS",
    "UNCHECKED",
    "Admission",
    "Decision",
    "LimiterUnavailable",
    "Limits",
    "Scope",
    "ScopeStream",
    "Window",
    "client_key",
    "seconds_until",
    "tighter",
]
