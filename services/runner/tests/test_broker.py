"""`runs.get` and `runs.list` over NATS request/reply, answered by the runner process."""

from __future__ import annotations

import pytest

from agentry_common import rpc, subjects
from agentry_common.errors import NotFound, ValidationFailed
from agentry_common.requests import GetRun, ListRuns, RunPage, RunRecord


async def test_an_unknown_run_is_not_found(probe, rnc):
    with pytest.raises(NotFound) as missing:
        await rpc.call(rnc, subjects.RUNS_GET, GetRun(run_id="run_nope"), RunRecord)
    assert missing.value.code == "run_not_found"


async def test_history_pages_newest_first_with_an_opaque_cursor(probe, rnc):
    endpoint = probe.endpoint()
    run_ids = [(await probe.run(endpoint, f"input {i}")).run_id for i in range(3)]

    async def page(limit: int, cursor: str | None = None) -> RunPage:
        request = ListRuns(endpoint_id=endpoint.id, limit=limit, cursor=cursor)
        return await rpc.call(rnc, subjects.RUNS_LIST, request, RunPage)

    first = await page(2)
    assert [r.id for r in first.runs] == run_ids[::-1][:2] and first.next_cursor
    second = await page(2, first.next_cursor)
    assert [r.id for r in second.runs] == run_ids[:1] and second.next_cursor is None
    assert all(r.endpoint_id == endpoint.id and r.status == "succeeded" for r in first.runs + second.runs)
    assert (await page(100)).next_cursor is None


@pytest.mark.parametrize(("limit", "cursor"), [(0, None), (101, None), (10, "not-a-cursor")])
async def test_bad_page_requests_are_refused(probe, rnc, limit, cursor):
    with pytest.raises(ValidationFailed):
        await rpc.call(rnc, subjects.RUNS_LIST, ListRuns(endpoint_id="aep_x", limit=limit, cursor=cursor), RunPage)
