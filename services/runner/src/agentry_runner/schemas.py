"""Wire shapes derived from a stored run: the history record, the outcome event, the terminal progress.

Everything here is a pure function of the row, so announcing a run twice (a redelivery, two runners that
raced) sends the same bytes with the same `Nats-Msg-Id`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from agentry_common.errors import ValidationFailed
from agentry_common.events import (
    DoneData,
    ErrorData,
    RunCompleted,
    RunError,
    RunFailed,
    RunProgress,
    ToolCall,
    Usage,
    progress_of,
)
from agentry_common.requests import RunRecord

from .models import StoredRun

UPSTREAM_CODES = ("llm_auth_error", "llm_provider_error", "llm_timeout", "invalid_output", "url_not_allowed")


def http_status(run: StoredRun) -> int:
    """The HTTP status the gateway should answer for a failed run."""
    if run.status == "timeout":
        return 504
    return 502 if run.error_code in UPSTREAM_CODES else 500


def usage(run: StoredRun) -> Usage:
    return Usage(
        tokens_input=run.tokens_input,
        tokens_output=run.tokens_output,
        cost_cents=run.cost_cents,
        latency_ms=run.latency_ms,
        iterations=run.iterations,
    )


def error(run: StoredRun) -> RunError | None:
    if run.error_code is None:
        return None
    return RunError(code=run.error_code, message=run.error_message or "")


def record(run: StoredRun) -> RunRecord:
    return RunRecord(
        id=run.id,
        endpoint_id=run.endpoint_id,
        owner_id=run.owner_id,
        status=run.status,
        is_test=run.is_test,
        key_id=run.key_id,
        output=run.output,
        usage=usage(run),
        tool_calls=[ToolCall.model_validate(c) for c in run.tool_calls],
        tool_errors=run.tool_errors,
        price_per_run_cents=run.price_per_run_cents,
        error=error(run),
        http_status=http_status(run) if run.status in ("failed", "timeout") else None,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def outcome_event(run: StoredRun) -> RunCompleted | RunFailed:
    common: dict[str, Any] = {
        "id": f"evt_{run.id}",
        "occurred_at": run.finished_at,
        "run_id": run.id,
        "endpoint_id": run.endpoint_id,
        "owner_id": run.owner_id,
        "price_per_run_cents": run.price_per_run_cents,
        "is_test": run.is_test,
        "usage": usage(run),
        "key_id": run.key_id,
    }
    if run.status == "succeeded":
        return RunCompleted(**common, tool_errors=run.tool_errors)
    err = error(run) or RunError(code="internal_error", message="the run failed")
    return RunFailed(**common, status="timeout" if run.status == "timeout" else "failed", error=err)


def terminal_progress(run: StoredRun) -> RunProgress:
    used = usage(run)
    if run.status == "succeeded":
        done = DoneData(output=run.output, usage=used, tool_calls=[ToolCall.model_validate(c) for c in run.tool_calls])
        return progress_of(run.id, done, id=f"evt_done_{run.id}")
    err = (error(run) or RunError(code="internal_error", message="the run failed")).for_caller()
    failed = ErrorData(code=err.code, message=err.message, status=http_status(run), usage=used)
    return progress_of(run.id, failed, id=f"evt_error_{run.id}")


def encode_cursor(run: StoredRun) -> str:
    raw = orjson.dumps([run.created_at.isoformat(), run.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, run_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created_at), str(run_id)
    except (ValueError, TypeError):
        raise ValidationFailed("the cursor is not one this API returned", code="invalid_cursor") from None
