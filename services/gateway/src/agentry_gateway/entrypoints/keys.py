"""Caller keys of an endpoint (JWT, owner only): create, list, change, revoke. Another user's endpoint is 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import ErrorBody, NotFound, ValidationFailed
from agentry_common.requests import CreatedKey, CreateKey, Done, KeyInfo, ListKeys, RevokeKey, UpdateKey
from agentry_common.requests import KeyList as KeyInfoList

from ..key_schemas import KeyCreate, KeyCreated, KeyList, KeyOut, KeyPublic, KeyUpdate
from .deps import CurrentUser, Gateway, GatewayDep

router = APIRouter(prefix="/api/agent-endpoints/{endpoint_id}/keys", tags=["keys"], responses=ERROR_RESPONSES)
KEY_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "`endpoint_not_found`, or `key_not_found` (not this endpoint's key)"}
}


async def _owned(gw: Gateway, owner_id: str, endpoint_id: str) -> None:
    async with gw.unit_of_work() as repo:
        await gw.catalog.endpoint(repo, owner_id, endpoint_id)


async def _keys(gw: Gateway, request: Any, reply: type[Any]) -> Any:
    subjects_by_request: dict[type, str] = {
        CreateKey: subjects.KEYS_CREATE, ListKeys: subjects.KEYS_LIST, UpdateKey: subjects.KEYS_UPDATE,
        RevokeKey: subjects.KEYS_REVOKE,
    }  # fmt: skip
    subject = subjects_by_request[type(request)]
    return await rpc.call(
        gw.nc, subject, request, reply, timeout=gw.settings.rpc_timeout_s, unavailable="the keys service is unavailable"
    )


async def _public(gw: Gateway, keys: list[KeyInfo]) -> list[KeyPublic]:
    spent = await gw.spend.spent(keys)
    fields = set(KeyPublic.model_fields) - {"spent_cents"}
    return [KeyPublic(**key.model_dump(include=fields), spent_cents=spent.get(key.id)) for key in keys]


@router.post("", status_code=201, summary="Issue a new caller key (the raw key is shown only in this answer)")
async def create_key(endpoint_id: str, body: KeyCreate, user: CurrentUser, gw: GatewayDep) -> KeyCreated:
    await _owned(gw, user.id, endpoint_id)
    request = CreateKey(endpoint_id=endpoint_id, owner_id=user.id, **body.model_dump())
    created: CreatedKey = await _keys(gw, request, CreatedKey)
    return KeyCreated(key=(await _public(gw, [created.key]))[0], api_key=created.api_key)


@router.get("", summary="The endpoint's keys, revoked ones included (for audit), oldest first")
async def list_keys(endpoint_id: str, user: CurrentUser, gw: GatewayDep) -> KeyList:
    await _owned(gw, user.id, endpoint_id)
    found: KeyInfoList = await _keys(gw, ListKeys(endpoint_id=endpoint_id), KeyInfoList)
    return KeyList(keys=await _public(gw, found.keys))


@router.get("/{key_id}", responses=KEY_NOT_FOUND, summary="One key")
async def get_key(endpoint_id: str, key_id: str, user: CurrentUser, gw: GatewayDep) -> KeyOut:
    await _owned(gw, user.id, endpoint_id)
    found: KeyInfoList = await _keys(gw, ListKeys(endpoint_id=endpoint_id, key_id=key_id), KeyInfoList)
    if not found.keys:
        raise NotFound("key not found", code="key_not_found")
    return KeyOut(key=(await _public(gw, found.keys))[0])


@router.patch(
    "/{key_id}", responses=KEY_NOT_FOUND, summary="Change a key's name, expiry, rate limit or spend cap (partial)"
)
async def update_key(endpoint_id: str, key_id: str, body: KeyUpdate, user: CurrentUser, gw: GatewayDep) -> KeyOut:
    await _owned(gw, user.id, endpoint_id)
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "spend_cap_period"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required}: may not be null")
    request = UpdateKey(endpoint_id=endpoint_id, key_id=key_id, sent=sorted(changes), **changes)
    info: KeyInfo = await _keys(gw, request, KeyInfo)
    return KeyOut(key=(await _public(gw, [info]))[0])


@router.delete(
    "/{key_id}",
    status_code=204,
    responses=KEY_NOT_FOUND,
    summary="Revoke a key: it fails on every gateway within a second, and stays listed with `revoked_at`",
)
async def revoke_key(endpoint_id: str, key_id: str, user: CurrentUser, gw: GatewayDep) -> Response:
    await _owned(gw, user.id, endpoint_id)
    await _keys(gw, RevokeKey(endpoint_id=endpoint_id, key_id=key_id), Done)
    return Response(status_code=204)
