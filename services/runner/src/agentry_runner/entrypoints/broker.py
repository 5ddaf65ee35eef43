"""NATS entrypoints of the runner: `runs.get` / `runs.list` / `tools.list` in the `runner` queue group, and the
consumer of `run.requested` (see `consumer`), started with the process (see `container`)."""

from __future__ import annotations

from faststream.nats import NatsRouter

from agentry_common import subjects
from agentry_common.requests import GetRun, ListRuns, ListTools, RunPage, RunRecord, ToolList
from agentry_common.rpc import serve

from ..tool_listing import list_tools as list_server_tools
from .container import RunnerDep

QUEUE = "runner"
router = NatsRouter()


@router.subscriber(subjects.RUNS_GET, queue=QUEUE)
@serve
async def get_run(cmd: GetRun, runner: RunnerDep) -> RunRecord:
    return await runner.service.get(cmd.run_id)


@router.subscriber(subjects.RUNS_LIST, queue=QUEUE)
@serve
async def list_runs(cmd: ListRuns, runner: RunnerDep) -> RunPage:
    return await runner.service.page(cmd.endpoint_id, cmd.limit, cmd.cursor, cmd.key_id)


@router.subscriber(subjects.TOOLS_LIST, queue=QUEUE)
@serve
async def list_tools(cmd: ListTools, runner: RunnerDep) -> ToolList:
    service = runner.service
    return await list_server_tools(cmd, service.secrets, service.clients, service.tool_cache)
