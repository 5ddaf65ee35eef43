"""Charges continue their runs' traces: a `charge` span per run in a batch, child of the runner's span that
`run.completed` carries, and the outcome event carries the charge's span on to whoever consumes it.

A batch charges many runs in one transaction, so each charge span covers the whole batch, from fetch to
commit. With tracing off nothing is recorded and each outcome event passes its run's trace context along.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from opentelemetry.trace import SpanKind

from agentry_common import tracing

from ..domain import ChargeOutcome

Carrier = dict[str, str]


def charge_spans(outcomes: Sequence[ChargeOutcome], runs: Mapping[str, Carrier], started_ns: int) -> dict[str, Carrier]:
    """One span per charged run (`runs`: run_id → the trace its run.completed carried); returns the trace
    context each outcome event carries, by run_id."""
    if not tracing.enabled():
        return dict(runs)
    ended = time.time_ns()
    carried: dict[str, Carrier] = {}
    for outcome in outcomes:
        span = tracing.tracer.start_span(
            "charge",
            context=tracing.context_from(runs.get(outcome.run_id)),
            kind=SpanKind.CONSUMER,
            start_time=started_ns,
            attributes={
                "agentry.run_id": outcome.run_id,
                "agentry.charge_id": outcome.charge_id,
                "agentry.charge.status": "collected" if outcome.collected else "uncollected",
                "agentry.charge.amount_cents": outcome.amount_cents,
            },
        )
        carried[outcome.run_id] = tracing.carrier(span)
        span.end(end_time=ended)
    return carried
