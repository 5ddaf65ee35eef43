"""A run's outcome as the runner records it: the values of its `runs` row, typed.

`RunStart` is what an async run's `running` row holds; `RunOutcome` adds how the run ended. The repository
writes them (`RunsRepository.mark_running` / `finish`) and everything announced is derived from the row it
stored, so these types decide what a run's record and its events say.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from agentry_common.events import RunRequested

from .agent import RunState
from .pricing import cost_cents


def now() -> datetime:
    return datetime.now(UTC)


def storable(value: Any) -> Any:
    """`value` with every NUL character replaced by U+FFFD: PostgreSQL stores none in text or JSONB, and a
    model or a tool server may send one. (The run's input cannot hold one: the gateway refuses it.)"""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return value


@dataclass(slots=True, frozen=True)
class RunStart:
    """Who asked for the run and when it started: the columns every row of the run has."""

    id: str
    endpoint_id: str
    owner_id: str
    is_test: bool
    key_id: str | None
    input: Any
    price_per_run_cents: int
    attempts: int
    created_at: datetime
    started_at: datetime

    def row(self) -> dict[str, Any]:
        """The column values (shallow: the JSON values are the run's own, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True, frozen=True)
class RunOutcome(RunStart):
    """How the run ended: `succeeded`, `failed` or `timeout`, with what it produced and consumed."""

    status: str
    finished_at: datetime
    output: Any = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    cost_cents: float = 0.0
    latency_ms: int = 0
    iterations: int = 0
    error_code: str | None = None
    error_message: str | None = None


def start(event: RunRequested, delivery: int, started: datetime) -> RunStart:
    return RunStart(**_start_values(event, delivery, started))


def _start_values(event: RunRequested, delivery: int, started: datetime) -> dict[str, Any]:
    return {
        "id": event.run_id,
        "endpoint_id": event.endpoint.id,
        "owner_id": event.endpoint.owner_id,
        "is_test": event.is_test,
        "key_id": event.key_id,
        "input": event.input,
        "price_per_run_cents": event.endpoint.price_per_run_cents,
        "attempts": delivery,
        "created_at": event.requested_at,
        "started_at": started,
    }


def finished(
    event: RunRequested,
    delivery: int,
    started: datetime,
    state: RunState,
    status: str,
    *,
    markup: float,
    output: Any = None,
    error: tuple[str, str] | None = None,
) -> RunOutcome:
    """The outcome of a run that got this far (`state`); `markup` prices its tokens (reported, not charged)."""
    ended = now()
    endpoint = event.endpoint
    return RunOutcome(
        **_start_values(event, delivery, started),
        status=status,
        output=storable(output),
        tool_calls=storable([c.model_dump(mode="json") for c in state.tool_calls]),
        tool_errors=sum(1 for c in state.tool_calls if c.error),
        tokens_input=state.tokens_input,
        tokens_output=state.tokens_output,
        cost_cents=cost_cents(
            endpoint.llm_provider, endpoint.llm_model, state.tokens_input, state.tokens_output, markup
        ),
        latency_ms=max(0, int((ended - event.requested_at).total_seconds() * 1000)),
        iterations=state.iterations,
        error_code=error[0] if error else None,
        error_message=storable(error[1]) if error else None,
        finished_at=ended,
    )


def failed(event: RunRequested, delivery: int, started: datetime, code: str, message: str) -> RunOutcome:
    """A run that never ran (nothing consumed), recorded failed with this error."""
    return finished(event, delivery, started, RunState(), "failed", markup=0.0, error=(code, message))
