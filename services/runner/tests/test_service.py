"""Runs through NATS against the runner process: publish RunRequested with JetStream (as the gateway does),
then watch the progress, the outcome events on RUN_EVENTS, and `runs.get`."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import httpx
import orjson

from agentry_common import rpc, subjects
from agentry_common.events import ToolCallData
from agentry_common.requests import StoredSecret, StoreSecret

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


async def test_a_run_is_answered_recorded_and_announced_once(probe):
    endpoint = probe.endpoint(price_per_run_cents=5)
    finished = await probe.run(endpoint, "Invoice #42")
    assert finished.kinds == ["done"]  # not streaming: only the terminal progress
    done = finished.terminal.data
    assert done.output == "mock answer: Invoice #42"
    assert done.usage.tokens_input > 0 and done.usage.tokens_output > 0
    assert done.usage.iterations == 1 and done.tool_calls == []

    [event] = await probe.outcomes(finished.run_id)
    assert event["type"] == "run.completed" and event["status"] == "succeeded"
    assert (event["endpoint_id"], event["owner_id"]) == (endpoint.id, endpoint.owner_id)
    assert event["price_per_run_cents"] == 5 and event["usage"] == done.usage.model_dump()

    record = await probe.record(finished.run_id)
    assert record.status == "succeeded" and record.output == done.output
    assert record.usage == done.usage and record.finished_at is not None


async def test_a_streaming_run_through_a_real_mcp_server_reports_every_step(probe, mcp_server):
    endpoint = probe.endpoint(enable_streaming=True, servers=[probe.weather()])
    value = {"ask": "weather?", "mock": {"tool": "weather__forecast", "arguments": {"city": "Oslo", "days": 2}}}
    finished = await probe.run(endpoint, value)
    assert finished.kinds == ["thinking", "tool_call", "tool_result", "thinking", "done"]
    assert finished.progress[1].data == ToolCallData(name="weather__forecast", arguments={"city": "Oslo", "days": 2})
    assert finished.progress[2].data.result["sky"] == "sunny" and finished.progress[2].data.error is None
    assert ("forecast", {"city": "Oslo", "days": 2}) in mcp_server.calls

    done = finished.terminal.data
    assert done.usage.iterations == 2
    assert done.output.startswith('mock answer: {"city":"Oslo","days":2')
    record = await probe.record(finished.run_id)
    [call] = record.tool_calls
    assert (call.name, call.arguments, call.error) == ("weather__forecast", {"city": "Oslo", "days": 2}, None)
    assert call.result["temp_c"] == 21 and call.latency_ms >= 0


async def test_a_provider_tool_round_trip_sums_usage_and_prices_it(probe, fake_llm, mcp_server):
    model = fake_llm.model(
        fake_llm.openai(calls=[("weather__forecast", {"city": "Lima"})], usage=(100, 20)),
        fake_llm.openai("Sunny in Lima.", usage=(300, 10)),
        family="gpt-4o-mini",
    )
    endpoint = probe.endpoint(llm_provider="openai", llm_model=model, servers=[probe.weather()])
    finished = await probe.run(endpoint, "Weather in Lima?")
    done = finished.terminal.data
    assert done.output == "Sunny in Lima."
    usage = done.usage
    assert (usage.tokens_input, usage.tokens_output, usage.iterations) == (400, 30, 2)
    # gpt-4o-mini $0.15 / $0.60 per 1M tokens, markup 1.5 (the test runner's PLATFORM_MARKUP)
    assert abs(usage.cost_cents - (400 * 0.15 + 30 * 0.60) / 1e4 * 1.5) < 1e-9
    second = fake_llm.requests(model)[1].body["messages"]
    assert orjson.loads(second[-1]["content"])["city"] == "Lima" and second[-1]["role"] == "tool"


async def test_a_nul_character_from_the_model_or_a_tool_is_recorded_as_a_replacement_character(
    probe, fake_llm, mcp_server
):
    """PostgreSQL stores no NUL in text or JSONB; the run must still be recorded once, not retried forever."""
    model = fake_llm.model(
        fake_llm.openai(calls=[("weather__forecast", {"city": "Li\x00ma"})]),
        fake_llm.openai("Sunny\x00 in Lima."),
    )
    endpoint = probe.endpoint(llm_provider="openai", llm_model=model, servers=[probe.weather()])
    finished = await probe.run(endpoint, "Weather in Lima?")
    assert finished.terminal.event == "done" and finished.terminal.data.output == "Sunny\ufffd in Lima."
    record = await probe.record(finished.run_id)
    assert record.status == "succeeded" and record.output == "Sunny\ufffd in Lima."
    assert record.tool_calls[0].arguments == {"city": "Li\ufffdma"}
    assert len(fake_llm.requests(model)) == 2  # executed once
    assert len(await probe.outcomes(finished.run_id)) == 1


async def test_json_output_valid_corrected_and_invalid_twice(probe):
    endpoint = probe.endpoint(output_format="json", output_schema=SCHEMA)
    valid = await probe.run(endpoint, "Ada")
    corrected = await probe.run(endpoint, {"mock": {"answers": ["Name: Ada", '{"name": "Ada"}']}})
    invalid = await probe.run(endpoint, {"mock": {"answers": ["Name: Ada", '{"name": 1}']}})

    assert valid.terminal.data.output == {"name": "mock"}
    assert corrected.terminal.data.output == {"name": "Ada"}
    assert corrected.terminal.data.usage.iterations == 2
    assert invalid.terminal.event == "error"
    assert invalid.terminal.data.code == "invalid_output" and invalid.terminal.data.status == 502
    assert invalid.terminal.data.usage.iterations == 2
    [event] = await probe.outcomes(invalid.run_id)
    assert event["type"] == "run.failed" and event["error"]["code"] == "invalid_output"
    assert (await probe.record(invalid.run_id)).status == "failed"


async def test_a_run_past_its_timeout_ends_timeout(probe):
    endpoint = probe.endpoint(timeout_ms=1000)
    finished = await probe.run(endpoint, {"mock": {"delay_ms": 5000}})
    assert finished.terminal.event == "error"
    assert finished.terminal.data.code == "timeout" and finished.terminal.data.status == 504
    [event] = await probe.outcomes(finished.run_id)
    assert event["type"] == "run.failed" and event["status"] == "timeout"
    assert (await probe.record(finished.run_id)).status == "timeout"


async def test_a_rejected_llm_key_fails_the_run_with_502_telling_the_owner_only_why(probe, fake_llm):
    key = "sk-ant-platform"  # the runner's platform key (conftest), echoed upper-cased and cut short
    model = fake_llm.model(fake_llm.error(401, f"invalid x-api-key {key.upper()} (starts {key[:-2]})"))
    finished = await probe.run(probe.endpoint(llm_provider="anthropic", llm_model=model))
    assert finished.terminal.data.code == "llm_auth_error" and finished.terminal.data.status == 502
    assert finished.terminal.data.message == "anthropic answered 401"  # the caller's, fixed
    owners = (await probe.record(finished.run_id)).error.message, (await probe.outcomes(finished.run_id))[0]["error"]
    assert (
        owners[0]
        == owners[1]["message"]
        == ("anthropic answered 401 — the provider said: invalid x-api-key [redacted] (starts [redacted])")
    )


async def test_the_owners_own_llm_key_wins_and_is_never_shown(probe, fake_llm, rnc):
    endpoint = probe.endpoint(llm_provider="openai")
    secret = StoreSecret(owner_id=endpoint.owner_id, value="sk-byo-owner-key")
    stored = await rpc.call(rnc, subjects.SECRETS_STORE, secret, StoredSecret)
    model = fake_llm.model(fake_llm.openai("hi"))
    endpoint = endpoint.model_copy(update={"llm_model": model, "llm_secret_id": stored.secret_id})
    finished = await probe.run(endpoint)
    assert finished.terminal.event == "done"
    assert fake_llm.requests(model)[0].headers["authorization"] == "Bearer sk-byo-owner-key"
    record = await probe.record(finished.run_id)
    seen = (
        finished.terminal.model_dump_json()
        + record.model_dump_json()
        + orjson.dumps(await probe.outcomes(finished.run_id)).decode()
    )
    assert "sk-byo-owner-key" not in seen


async def test_mcp_headers_come_from_the_servers_secret(probe, rnc, mcp_server):
    endpoint = probe.endpoint()
    headers = orjson.dumps({"X-Weather-Token": "tok-from-secret"}).decode()
    secret = StoreSecret(owner_id=endpoint.owner_id, value=headers)
    stored = await rpc.call(rnc, subjects.SECRETS_STORE, secret, StoredSecret)
    endpoint = endpoint.model_copy(update={"servers": [probe.weather(secret=stored.secret_id)]})
    value = {"mock": {"tool": "weather__forecast", "arguments": {"city": "Bern"}}}
    finished = await probe.run(endpoint, value)
    assert finished.terminal.event == "done"
    assert any(h.get("x-weather-token") == "tok-from-secret" for h in mcp_server.headers)


async def test_link_local_urls_are_refused_at_run_time(probe):
    custom = probe.endpoint(llm_provider="custom", llm_model="llama3", llm_base_url="http://169.254.169.254/v1")
    refused = await probe.run(custom)
    assert refused.terminal.data.code == "url_not_allowed" and refused.terminal.data.status == 502

    metadata = probe.weather(slug="meta", url="http://169.254.169.254/mcp")
    endpoint = probe.endpoint(servers=[metadata])
    finished = await probe.run(endpoint, {"mock": {"tool": "meta__read", "arguments": {}}})
    assert finished.terminal.event == "done"  # a refused tool server is a tool error, not a failed run
    [call] = (await probe.record(finished.run_id)).tool_calls
    assert call.error is not None and call.error.startswith("tool server not allowed")


async def test_an_async_run_is_visible_as_running_then_finished(probe):
    endpoint = probe.endpoint(async_mode=True)
    event, sub = await probe.start(endpoint, {"mock": {"delay_ms": 1500}})
    status = None
    for _ in range(100):
        try:
            status = (await probe.record(event.run_id)).status
        except Exception:  # not picked up yet: run_not_found
            status = None
        if status == "running":
            break
        await asyncio.sleep(0.02)
    assert status == "running"
    finished = await probe.follow(event.run_id, sub)
    assert finished.terminal.event == "done"
    assert (await probe.record(event.run_id)).status == "succeeded"


# --- delivery semantics, driven in process on the same NATS and PostgreSQL ---


async def test_a_redelivered_finished_run_is_announced_again_and_not_rerun(probe, service, fake_llm, rnc):
    model = fake_llm.model(fake_llm.openai("only once"))
    endpoint = probe.endpoint(llm_provider="openai", llm_model=model)
    event, sub = await probe.start(endpoint, "hi")
    first = await probe.follow(event.run_id, sub)

    again = await rnc.subscribe(subjects.run_progress(event.run_id))
    await service.process(event, delivery=2)  # as if the first runner died before its ack
    replayed = await probe.follow(event.run_id, again)

    assert len(fake_llm.requests(model)) == 1
    assert replayed.terminal.data == first.terminal.data
    assert len(await probe.outcomes(event.run_id)) == 1  # same Nats-Msg-Id: JetStream dropped the replay


async def test_the_last_delivery_of_a_run_that_keeps_crashing_records_it_failed(probe, service, fake_llm):
    model = fake_llm.model(fake_llm.openai("never asked"))
    endpoint = probe.endpoint(llm_provider="openai", llm_model=model)
    event = probe.event(endpoint, "hi")
    await service.process(event, delivery=service.settings.runner_max_deliveries)
    assert fake_llm.requests(model) == []
    record = await probe.record(event.run_id)
    assert record.status == "failed" and record.error.code == "internal_error"
    [outcome] = await probe.outcomes(event.run_id)
    assert outcome["type"] == "run.failed"


async def test_two_runners_racing_on_one_run_announce_the_first_recorded_outcome(probe, service, fake_llm):
    fast = fake_llm.model(fake_llm.openai("first"))
    event = probe.event(probe.endpoint(llm_provider="openai", llm_model=fast), "hi")
    await service.process(event, delivery=1)
    slow = event.model_copy(update={"endpoint": event.endpoint.model_copy(update={"output_format": "json"})})
    await service.process(slow, delivery=1)  # a second execution ends differently (invalid JSON)…
    record = await probe.record(event.run_id)
    assert record.status == "succeeded" and record.output == "first"  # …but the first outcome stands
    [outcome] = await probe.outcomes(event.run_id)
    assert outcome["type"] == "run.completed"


async def test_the_row_a_run_finishes_with_is_the_row_stored(probe, service):
    """`finish` does not read the row back: it returns the values written plus what the statement kept of an
    earlier attempt's `running` row — which must be exactly what a later read returns."""
    from agentry_runner import outcome
    from agentry_runner.agent import RunState
    from agentry_runner.models import Run, StoredRun
    from agentry_runner.repository import Finishes, RunsRepository

    assert [f.name for f in dataclasses.fields(StoredRun)] == [c.name for c in Run.__table__.c]
    repo = RunsRepository(service.db, Finishes(service.db))
    event = probe.event(probe.endpoint(async_mode=True), {"b": 1, "a": [1.5, None]})
    first_attempt = event.requested_at + timedelta(milliseconds=3)
    await repo.mark_running(outcome.start(event, 1, first_attempt))
    output = {"zeta": 1, "alpha": {"x": [True, 2.25, "\u00e9"]}}
    ended = outcome.finished(
        event, 2, first_attempt + timedelta(seconds=1), RunState(), "succeeded", markup=1.0, output=output
    )
    stored, ours = await repo.finish(ended)
    assert ours and stored == await repo.get(event.run_id)
    assert stored.started_at == first_attempt and stored.attempts == 2 and stored.output == output
    # A second outcome for the same run changes nothing and gets the stored row back.
    late = outcome.failed(event, 3, first_attempt, "internal_error", "late")
    assert await repo.finish(late) == (stored, False)


async def test_outcomes_ending_together_share_statements_and_each_run_keeps_its_first_outcome(probe, service):
    """Runs that end while an outcome write is in flight are written together in one statement; each caller
    still learns whether its row is the stored one: two outcomes of one run in the same moment (two
    deliveries) store the first, and an outcome for a run already finished stores nothing."""
    from agentry_runner import outcome
    from agentry_runner.agent import RunState
    from agentry_runner.repository import Finishes, RunsRepository

    class Counted:
        """The runner's database, counting the statements that reach it."""

        def __init__(self, db):
            self.db, self.statements = db, 0

        async def fetch(self, sql, params, **kw):
            self.statements += 1
            return await self.db.fetch(sql, params, **kw)

    db = Counted(service.db)
    repo = RunsRepository(service.db, Finishes(db))  # type: ignore[arg-type]
    endpoint = probe.endpoint()
    events = [probe.event(endpoint, f"run {i}") for i in range(30)]
    done_before = events[0]
    first, ours = await repo.finish(outcome.failed(done_before, 1, done_before.requested_at, "internal_error", "x"))
    assert ours
    db.statements = 0

    def ended(event, note):
        return outcome.finished(event, 1, event.requested_at, RunState(), "succeeded", markup=1.0, output=note)

    twice = events[1]
    outcomes = [ended(e, f"answer {i}") for i, e in enumerate(events)] + [ended(twice, "second delivery")]
    results = await asyncio.gather(*(repo.finish(o) for o in outcomes))

    assert db.statements < len(outcomes) / 2, db.statements  # written together, not one statement each
    assert results[0] == (first, False)  # already finished: nothing stored, the stored row returned
    for (stored, ours), o in zip(results[2:30], outcomes[2:30], strict=True):
        assert ours and stored.output == o.output and stored == await repo.get(o.id)
    (a, a_ours), (b, b_ours) = results[1], results[30]
    assert (a_ours, b_ours) == (True, False) and a == b == await repo.get(twice.run_id)
    assert a.output == "answer 1"


async def test_an_outcome_the_database_refuses_fails_only_its_own_run_not_the_others_written_with_it(probe, service):
    import psycopg

    from agentry_runner import outcome
    from agentry_runner.agent import RunState
    from agentry_runner.repository import Finishes, RunsRepository

    repo = RunsRepository(service.db, Finishes(service.db))
    endpoint = probe.endpoint()
    events = [probe.event(endpoint, f"run {i}") for i in range(8)]
    outcomes = [
        outcome.finished(e, 1, e.requested_at, RunState(), "succeeded", markup=1.0, output=f"answer {i}")
        for i, e in enumerate(events)
    ]
    # An error code longer than its column (64): PostgreSQL refuses that row, and with it any statement holding it.
    poisoned = outcome.failed(events[5], 1, events[5].requested_at, "x" * 100, "refused")
    outcomes[5] = poisoned
    results = await asyncio.gather(*(repo.finish(o) for o in outcomes), return_exceptions=True)
    assert isinstance(results[5], psycopg.errors.StringDataRightTruncation)
    for i, (result, o) in enumerate(zip(results, outcomes, strict=True)):
        if i != 5:
            stored, ours = result
            assert ours and stored.output == o.output and stored == await repo.get(o.id)
    assert await repo.get(poisoned.id) is None


async def test_finished_runs_show_in_the_runner_metrics(probe, runner):
    await probe.run(probe.endpoint(), "count me")
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{runner.url}/metrics")).text
    assert 'agentry_runner_runs_total{model="mock-1",provider="mock",status="succeeded"}' in text
    assert "agentry_runner_runs_in_flight" in text
