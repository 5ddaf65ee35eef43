"""A failed run's error as the gateway passes it on: the caller never gets the provider's own words, which the
runner keeps for the endpoint's owner after ` — the provider said: `."""

from __future__ import annotations

from datetime import UTC, datetime

from agentry_common.events import PROVIDER_SAID, RunError
from agentry_common.requests import RunRecord
from agentry_gateway.dispatch import _terminal_from_record

OWNERS = RunError(code="llm_provider_error", message=f"gemini answered 400{PROVIDER_SAID}model not found: [redacted]")


def test_the_caller_is_told_the_provider_and_status_only():
    assert OWNERS.for_caller() == RunError(code="llm_provider_error", message="gemini answered 400")
    plain = RunError(code="timeout", message="the run did not finish within timeout_ms (1000 ms)")
    assert plain.for_caller() == plain


def test_an_answer_rebuilt_from_the_record_carries_the_callers_message():
    record = RunRecord(
        id="run_1", endpoint_id="aep_1", owner_id="u", status="failed", error=OWNERS, http_status=502,
        created_at=datetime.now(UTC),
    )  # fmt: skip
    progress = _terminal_from_record(record)
    assert progress is not None
    # The frame the caller gets: no `usage` key, since the runner's answer was lost.
    assert progress.data.model_dump() == {"code": "llm_provider_error", "message": "gemini answered 400", "status": 502}
