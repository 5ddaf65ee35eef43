"""The run.requested consumer across processes: a runner killed mid-run (kill -9) does not lose the run,
and the run still ends exactly once. Each test here has a NATS server and runner processes of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import psycopg
import pytest


class Runners:
    """Runner processes on a NATS server of their own, and a probe on it; all stopped when the test ends."""

    def __init__(self, servers: Any, kit: Any, env: dict[str, str], probe: Any):
        self.servers, self.kit, self.env, self.probe = servers, kit, env, probe
        self.procs: list[Any] = []

    async def start(self, **extra: str) -> Any:
        proc = await asyncio.to_thread(self.kit.start_process, self.servers, "runner", **{**self.env, **extra})
        self.procs.append(proc)
        return proc


@asynccontextmanager
async def runners(servers: Any, fake_llm: Any, kit: Any, **env: str) -> AsyncIterator[Runners]:
    with kit.private_nats() as nats_server:
        nc = await nats.connect(nats_server.url)
        group = Runners(
            servers, kit, kit.runner_env(nats_server.url, fake_llm, LLM_TIMEOUT_S="300", **env), kit.Probe(nc)
        )
        try:
            yield group
        finally:
            await nc.drain()
            for proc in group.procs:
                await asyncio.to_thread(proc.stop)


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def attempts(database_url: str, run_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT attempts FROM runner.runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_run_whose_runner_is_killed_mid_run_is_finished_once_by_another(servers, fake_llm, kit):
    model = fake_llm.model(kit.Reply(fake_llm.openai("lost").body, delay=120), fake_llm.openai("finished"))
    async with runners(servers, fake_llm, kit, RUNNER_ACK_WAIT_S="2") as group:
        first, probe = await group.start(), group.probe
        endpoint = probe.endpoint(llm_provider="openai", llm_model=model, timeout_ms=120000)
        event, sub = await probe.start(endpoint, "hello")
        await wait_until(lambda: len(fake_llm.requests(model)) == 1)  # the first runner is mid-call

        await asyncio.to_thread(first.stop, True)  # SIGKILL: no cleanup, no nak, no ack
        await group.start()
        finished = await probe.follow(event.run_id, sub, timeout=30)

        assert finished.terminal.event == "done" and finished.terminal.data.output == "finished"
        assert len(fake_llm.requests(model)) == 2
        [outcome] = await probe.outcomes(event.run_id)
        assert outcome["type"] == "run.completed"
        record = await probe.record(event.run_id)
        assert record.status == "succeeded"
        assert attempts(servers.database_url, event.run_id) == 2


async def test_a_runner_shutting_down_hands_its_unfinished_run_back_at_once(servers, fake_llm, kit):
    model = fake_llm.model(kit.Reply(fake_llm.openai("lost").body, delay=120), fake_llm.openai("finished"))
    # An ack wait far longer than the test may take: only an explicit hand-back can move the run in time.
    async with runners(servers, fake_llm, kit, RUNNER_ACK_WAIT_S="90") as group:
        first, probe = await group.start(RUNNER_SHUTDOWN_GRACE_S="0.2"), group.probe
        endpoint = probe.endpoint(llm_provider="openai", llm_model=model, timeout_ms=120000)
        event, sub = await probe.start(endpoint, "hello")
        await wait_until(lambda: len(fake_llm.requests(model)) == 1)
        await group.start()
        await asyncio.to_thread(first.stop)  # SIGTERM: graceful
        finished = await probe.follow(event.run_id, sub, timeout=30)
        assert finished.terminal.data.output == "finished"
        assert len(await probe.outcomes(event.run_id)) == 1


async def test_a_runner_takes_no_more_runs_than_its_free_slots_and_another_runner_gets_the_rest(servers, fake_llm, kit):
    """A run fetched without a free slot would wait unheartbeated while another runner sits idle."""
    slow = fake_llm.openai("done")
    slow.delay = 1.5
    model = fake_llm.model(slow)
    async with runners(servers, fake_llm, kit, RUNNER_CONCURRENCY="2") as group:
        await group.start()
        probe = group.probe
        endpoint = probe.endpoint(llm_provider="openai", llm_model=model, timeout_ms=120000)
        started = [await probe.start(endpoint, f"run {i}") for i in range(5)]
        await wait_until(lambda: len(fake_llm.requests(model)) == 2)
        await asyncio.sleep(0.5)
        info = await probe.nc.jetstream().consumer_info("RUNS", "runner")
        assert info.num_ack_pending == 2 and info.num_pending == 3  # the rest wait in the stream…
        assert len(fake_llm.requests(model)) == 2
        await group.start()
        await wait_until(lambda: len(fake_llm.requests(model)) >= 4, timeout=5)  # …for whoever is free
        results = [await probe.follow(event.run_id, sub, timeout=30) for event, sub in started]
        assert all(r.terminal.event == "done" for r in results)
        assert len(fake_llm.requests(model)) == 5  # each run executed once


@pytest.mark.slow
async def test_many_runs_survive_a_runner_killed_repeatedly_and_each_ends_exactly_once(servers, fake_llm, kit):
    slow = fake_llm.openai("done")
    slow.delay = 0.5
    model = fake_llm.model(slow)
    async with runners(servers, fake_llm, kit, RUNNER_ACK_WAIT_S="2") as group:
        alive = [await group.start() for _ in range(2)]
        probe = group.probe
        endpoint = probe.endpoint(llm_provider="openai", llm_model=model, timeout_ms=120000)
        started = [await probe.start(endpoint, f"run {i}") for i in range(40)]
        for _ in range(3):
            await asyncio.sleep(1)
            await asyncio.to_thread(alive.pop(0).stop, True)
            alive.append(await group.start())
        results = [await probe.follow(event.run_id, sub, timeout=60) for event, sub in started]
        # A run interrupted on every delivery but the last ends failed; none is lost, none ends twice.
        for result in results:
            assert result.terminal.event == "done" or result.terminal.data.code == "internal_error"
            assert len(await probe.outcomes(result.run_id)) == 1
        assert sum(r.terminal.event == "done" for r in results) >= len(results) // 2
