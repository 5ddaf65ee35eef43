"""The pure parts of the service: the retry schedule and what each platform event becomes."""

from __future__ import annotations

import json
from datetime import timedelta

from agentry_common.events import ChargeUncollected, RunError, RunFailed, utcnow
from agentry_webhooks import service
from agentry_webhooks.settings import Settings

SETTINGS = Settings(webhook_retry_base_s=10, webhook_retry_max_s=7200, webhook_retry_window_s=86400)


def test_retries_back_off_exponentially_up_to_the_cap_and_stop_after_the_window() -> None:
    give_up_at = utcnow() + timedelta(days=1)
    waits = []
    for attempts in range(1, 12):
        at = service.next_attempt(attempts, give_up_at, SETTINGS)
        assert at is not None
        waits.append((at - utcnow()).total_seconds())
    assert 7 < waits[0] < 13 and 15 < waits[1] < 25 and 30 < waits[2] < 50  # 10 s, 20 s, 40 s ± jitter
    assert all(w <= 7200 * 1.2 + 1 for w in waits) and waits[-1] > 7200 * 0.8 - 1  # capped at two hours
    assert service.next_attempt(3, utcnow() + timedelta(seconds=5), SETTINGS) is None  # past the window


def test_a_failed_run_becomes_run_failed_with_its_status_and_error() -> None:
    event = RunFailed(run_id="run_1", endpoint_id="aep_1", owner_id="u", status="timeout",
                      error=RunError(code="timeout", message="took too long"))  # fmt: skip
    notice = service.run_notice(event.model_dump_json().encode())
    assert (notice.owner_id, notice.type, notice.key) == ("u", "run.failed", "run.failed:run_1")
    body = json.loads(notice.body())
    assert body["type"] == "run.failed" and body["timestamp"].endswith("Z")
    assert body["data"]["status"] == "timeout" and body["data"]["error"]["code"] == "timeout"
    assert body["data"]["key_id"] is None


def test_an_uncollected_charge_becomes_charge_uncollected_keyed_by_its_charge() -> None:
    event = ChargeUncollected(charge_id="chg_1", run_id="run_1", endpoint_id="aep_1", owner_id="u", amount_cents=5)
    notice = service.charge_notice(event.model_dump_json().encode())
    assert (notice.type, notice.key) == ("charge.uncollected", "charge.uncollected:chg_1")
    assert json.loads(notice.body())["data"] == {
        "run_id": "run_1", "endpoint_id": "aep_1", "amount_cents": 5, "status": "uncollected", "charge_id": "chg_1",
    }  # fmt: skip


def test_secrets_are_standard_webhooks_secrets_of_32_random_bytes() -> None:
    import base64

    a, b = service.new_secret(), service.new_secret()
    assert a != b and a.startswith("whsec_") and len(base64.b64decode(a[6:])) == 32


def test_deliveries_are_kept_at_least_as_long_as_the_events_that_could_come_again() -> None:
    import pytest
    from pydantic import ValidationError

    assert Settings().webhook_retention_s == 30 * 86400
    with pytest.raises(ValidationError, match="webhook_retention_s"):
        Settings(webhook_retention_s=6 * 86400)  # a redelivered week-old event would be sent a second time
