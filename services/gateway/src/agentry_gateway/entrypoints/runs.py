"""Runs: `POST /api/run/{slug}` (API key or public), owner test runs, async status, and run history."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import (
    AgentryError,
    ErrorBody,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from agentry_common.events import EndpointSnapshot, new_id
from agentry_common.requests import Charges, GetCharges, ListRuns, RunPage, RunRecord, VerifiedKey

from .. import sse
from ..auth import User
from ..catalog_cache import RunnableEndpoint
from ..client_ip import client_ip_of
from ..ratelimit import Admission
from ..schemas import Charge, RunAccepted, RunBody, RunHistory, RunHistoryItem, RunResult, RunStatus
from ..service import endpoint_snapshot
from .deps import CurrentUser, Gateway, GatewayDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "`missing_api_key`, `invalid_api_key` (unknown or revoked), `api_key_expired`",
        402: "`key_spend_cap_reached`: this run would take the API key past its spend cap; "
        "`endpoint_budget_reached`: it would take the endpoint past its budget for the period",
        403: "Endpoint disabled",
        413: "Request body too large",
        429: "Rate limited (see Retry-After)",
        502: "LLM provider error or invalid output",
        504: "The run timed out",
    }.items()
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def api_key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization.startswith("Bearer "):
        return authorization[7:].strip()
    if authorization and authorization.strip().startswith("aek_"):
        # The commonest slip: the key pasted without its scheme. Say so rather than "needs an API key".
        raise Unauthorized(NO_SCHEME, code="missing_api_key")
    return None


NO_SCHEME = "the Authorization header lacks its scheme: send `Authorization: Bearer aek_…` (or `X-API-Key: aek_…`)"


@dataclass(frozen=True)
class Admitted:
    """A caller's run let in: its rate-limit decision (read while the run is dispatched) and its key's verdict."""

    admission: Admission
    verdict: VerifiedKey | None

    @property
    def key_id(self) -> str | None:
        return self.verdict.key_id if self.verdict is not None else None


async def admit_run(
    gw: Gateway, ep: RunnableEndpoint, request: Request, key: str | None, verdict: VerifiedKey | None = None
) -> Admitted:
    """What every run by a caller passes (`/api/run/{slug}` and `/v1/chat/completions` alike): the endpoint's
    key (or the `verdict` already had for it), its status, and the endpoint's and the key's rate limits. The
    limit's headers are read while the run is dispatched; every answer from here on carries them."""
    snap = ep.snapshot
    if ep.auth_mode == "api_key" and verdict is None:
        if not key:
            raise Unauthorized("this endpoint needs an API key", code="missing_api_key")
        verdict = await gw.keys.verify(key)
        if verdict.endpoint_id != snap.id:
            raise Unauthorized("invalid API key", code="invalid_api_key")
    if ep.status != "active":
        raise Forbidden("this endpoint is disabled", code="endpoint_disabled")
    public = ep.auth_mode == "public"  # only a public run is limited per client address too
    client_ip = client_ip_of(request, gw.settings.trusted_proxies) if public else ""
    key_id = verdict.key_id if verdict is not None else None
    rate = verdict.rate_limit_per_minute if verdict is not None else None
    return Admitted(await gw.limits.start_run(snap.id, public, client_ip, key_id, rate), verdict)


@asynccontextmanager
async def started_run(gw: Gateway, admitted: Admitted, snap: EndpointSnapshot) -> AsyncIterator[str]:
    """A valid run about to be dispatched: its id, its key marked used, and its price held in its key's cap and
    its endpoint's budget before any work (402 past either; a run with neither skips it). A held price goes back
    when the broker refused the run (nothing started); once the run exists, billing settles or releases the hold
    when it sees the run end."""
    if admitted.key_id is not None:
        gw.keys.used(admitted.key_id)
    run_id = new_id("run")
    held = await gw.spend.reserve(run_id, admitted.verdict, snap)
    try:
        yield run_id
    except ServiceUnavailable as err:
        if held and err.code == "broker_unavailable":
            try:
                await gw.spend.release(run_id)
            except AgentryError:  # billing away too: its sweeper releases the hold after the longest run
                log.warning("could not release a spend hold", extra={"run_id": run_id})
        raise


@router.post(
    "/run/{slug}",
    tags=["runs"],
    response_model=RunResult,
    responses={**RUN_ERRORS, 202: {"model": RunAccepted, "description": "Accepted (async endpoints)"}},
    summary="Run an agent endpoint",
)
async def run_endpoint(
    slug: str,
    body: RunBody,
    request: Request,
    gw: GatewayDep,
    authorization: Annotated[str | None, Header(description="`Bearer aek_…`")] = None,
    x_api_key: Annotated[str | None, Header(description="`aek_…` (alternative to Authorization)")] = None,
) -> Response:
    ep = await gw.cache.by_slug(slug)
    snap = ep.snapshot
    key = api_key_from(authorization, x_api_key) if ep.auth_mode == "api_key" else None
    admitted = await admit_run(gw, ep, request, key)
    key_id = admitted.key_id
    admission = admitted.admission
    async with admission.on_errors():
        problem = ep.validate_input(body.input)
        if problem:
            raise ValidationFailed(problem, code="invalid_input")
        async with started_run(gw, admitted, snap) as run_id:
            if snap.async_mode:
                await gw.dispatcher.submit(snap, body.input, is_test=False, run_id=run_id, key_id=key_id)
                accepted = {"run_id": run_id, "status": "queued", "status_url": f"/api/runs/{run_id}"}
                return _json(accepted, 202, {**(await admission.decision()).headers(), "X-Run-Id": run_id})
            if snap.enable_streaming:
                _, frames = await gw.dispatcher.stream(snap, body.input, is_test=False, run_id=run_id, key_id=key_id)
                return sse.response(frames, {**(await admission.decision()).headers(), "X-Run-Id": run_id})
            result = await gw.dispatcher.run(snap, body.input, is_test=False, run_id=run_id, key_id=key_id)
        headers = (await admission.decision()).headers()
    return _json(result.model_dump(mode="json"), 200, {**headers, "X-Run-Id": result.run_id})


@router.post("/agent-endpoints/{endpoint_id}/test", tags=["endpoints"], response_model=RunResult, responses=RUN_ERRORS)
async def test_endpoint(endpoint_id: str, body: RunBody, user: CurrentUser, gw: GatewayDep) -> Response:
    """Run the endpoint as its owner: no API key, never charged the per-run price, 10 per minute."""
    async with gw.unit_of_work() as repo:
        ep = await gw.catalog.endpoint(repo, user.id, endpoint_id)
        snap = endpoint_snapshot(ep, await repo.servers(ep.workspace_id))
    admission = await gw.limits.start_test(endpoint_id)
    async with admission.on_errors():
        result = await gw.dispatcher.run(snap, body.input, is_test=True)
        headers = (await admission.decision()).headers()
    return _json(result.model_dump(mode="json"), 200, {**headers, "X-Run-Id": result.run_id})


async def _caller_may_see(gw: Gateway, endpoint_id: str, owner_id: str, request: Request) -> bool:
    """The run's endpoint key, the owner's JWT, or nothing at all for a public endpoint."""
    authorization = request.headers.get("authorization")
    key = api_key_from(authorization, request.headers.get("x-api-key"))
    if key and key.startswith("aek_"):
        return (await gw.keys.verify(key)).endpoint_id == endpoint_id
    if authorization:
        user: User = await gw.jwt.user(authorization)
        return user.id == owner_id
    async with gw.unit_of_work() as repo:
        ep = await repo.endpoint_by_id(endpoint_id)
    if ep is None or ep.auth_mode != "public":
        if key:  # an X-API-Key that is no key at all
            raise Unauthorized("invalid API key", code="invalid_api_key")
        raise _no_credentials()
    return True


# Asked without credentials, a run that is not a public endpoint's answers 401, whether it exists or not: a 404
# would tell a caller who forgot the key nothing useful, and telling the two apart would reveal which ids exist.
def _no_credentials() -> Unauthorized:
    return Unauthorized(
        "this run's status needs the endpoint's API key (`Authorization: Bearer aek_…`) or its owner's token",
        code="missing_api_key",
    )


def _has_credentials(request: Request) -> bool:
    return bool(request.headers.get("authorization") or request.headers.get("x-api-key"))


@router.get("/runs/{run_id}", tags=["runs"], summary="Status of a run (async endpoints)")
async def run_status(run_id: str, request: Request, gw: GatewayDep) -> RunStatus:
    try:
        record: RunRecord | None = await gw.dispatcher.get(run_id)
    except NotFound:
        record = None
    if record is not None:
        if not await _caller_may_see(gw, record.endpoint_id, record.owner_id, request):
            raise NotFound("run not found", code="run_not_found")
        done = record.status == "succeeded"
        return RunStatus(
            run_id=run_id,
            status=record.status,
            output=record.output if done else None,
            usage=record.usage if record.status not in ("queued", "running") else None,
            error=record.error.for_caller().model_dump() if record.error else None,  # may be a caller's key
        )
    queued = await gw.dispatcher.queued_owner(run_id)
    if queued is None:
        if not _has_credentials(request):
            raise _no_credentials()
        raise NotFound("run not found", code="run_not_found")
    if not await _caller_may_see(gw, queued["endpoint_id"], queued["owner_id"], request):
        raise NotFound("run not found", code="run_not_found")
    return RunStatus(run_id=run_id, status="queued")


def _charge(run: RunRecord, charges: Charges) -> Charge:
    known = charges.charges.get(run.id)
    if known is not None:
        return Charge(amount_cents=known.amount_cents, status=known.status)
    if run.status == "succeeded" and run.price_per_run_cents > 0 and not run.is_test:
        return Charge(amount_cents=run.price_per_run_cents, status="pending")
    return Charge(amount_cents=0, status="none")


@router.get("/agent-endpoints/{endpoint_id}/runs", tags=["endpoints"])
async def run_history(
    endpoint_id: str,
    user: CurrentUser,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    key_id: Annotated[str | None, Query(max_length=64, description="Only the runs made with this API key.")] = None,
) -> RunHistory:
    async with gw.unit_of_work() as repo:
        await gw.catalog.endpoint(repo, user.id, endpoint_id)
    timeout = gw.settings.rpc_timeout_s
    listing = ListRuns(endpoint_id=endpoint_id, limit=limit, cursor=cursor, key_id=key_id)
    page = await rpc.call(
        gw.nc, subjects.RUNS_LIST, listing, RunPage,
        timeout=timeout, unavailable="the runner is unavailable",
    )  # fmt: skip
    charges = await rpc.call(
        gw.nc, subjects.WALLET_CHARGES, GetCharges(run_ids=[r.id for r in page.runs]), Charges,
        timeout=timeout, unavailable="billing is unavailable",
    )  # fmt: skip
    items = [
        RunHistoryItem(
            id=r.id,
            status=r.status,
            tokens_input=r.usage.tokens_input,
            tokens_output=r.usage.tokens_output,
            cost_cents=r.usage.cost_cents,
            latency_ms=r.usage.latency_ms,
            iterations=r.usage.iterations,
            tool_calls=r.tool_calls,
            tool_errors=r.tool_errors,
            charge=_charge(r, charges),
            is_test=r.is_test,
            key_id=r.key_id,
            error=r.error.model_dump() if r.error else None,
            created_at=r.created_at,
        )
        for r in page.runs
    ]
    return RunHistory(runs=items, next_cursor=page.next_cursor)
