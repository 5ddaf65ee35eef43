"""While PostgreSQL is down or restarting, services answer 503 `database_unavailable`, not an unhandled 500.

Found by `make chaos` (tools/chaos.py) when it restarts PostgreSQL under load: the gateway answered 500 with a
traceback in its log, and because an unhandled error also makes uvicorn close the keep-alive connection, the
client's next request on that connection failed with a reset. The real outage is exercised by
tests/test_chaos.py; here the mapping itself, for HTTP handlers (app.py) and request/reply handlers (rpc.py).
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from agentry_common.app import install_error_handlers
from agentry_common.requests import GetBalance
from agentry_common.rpc import serve

OUTAGES = [
    OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused")),
    InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
]


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda e: type(e).__name__)
async def test_an_http_request_during_a_database_outage_answers_503_and_keeps_its_connection(
    outage: Exception,
) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/down")
    async def down() -> None:
        raise outage

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/down")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"error": {"code": "database_unavailable", "message": "the database is unavailable; try again"}}


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda e: type(e).__name__)
async def test_a_request_reply_handler_during_a_database_outage_replies_503(outage: Exception) -> None:
    @serve
    async def balance(request: GetBalance) -> None:
        raise outage

    reply = await balance(GetBalance(owner_id="u"))
    assert reply["ok"] is False and reply["error"]["status"] == 503
    assert reply["error"]["code"] == "database_unavailable"


async def test_any_other_failure_is_still_an_internal_error() -> None:
    @serve
    async def balance(request: GetBalance) -> None:
        raise RuntimeError("a bug")

    reply = await balance(GetBalance(owner_id="u"))
    assert reply["error"] == {"status": 500, "code": "internal_error", "message": "internal error"}
