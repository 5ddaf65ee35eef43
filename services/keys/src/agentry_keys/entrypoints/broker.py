"""NATS entrypoints of the keys service: request handlers in the `keys` queue group."""

from __future__ import annotations

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsBroker

from agentry_common import asyncapi, subjects
from agentry_common.errors import AgentryError, BadRequest
from agentry_common.events import KeysRevoked, SecretsChanged
from agentry_common.requests import (
    CreatedKey,
    CreateKey,
    DeleteSecret,
    Done,
    IssuedKey,
    IssueKey,
    KeyInfo,
    KeyList,
    KeysUsed,
    ListKeys,
    ResolvedSecret,
    ResolveSecret,
    RevokeKey,
    StoredSecret,
    StoreSecret,
    UpdateKey,
    VerifiedKey,
    VerifyKey,
)
from agentry_common.rpc import serve
from agentry_common.sealed import seal

from .. import metrics
from ..service import key_info
from .container import KeysDep

QUEUE = "keys"
router = NatsRouter()
asyncapi.publishes(
    subjects.KEYS_REVOKED, KeysRevoked, by="keys",
    description="An endpoint's API key stopped being valid (rotated or revoked) or its limits changed; "
    "gateways drop cached verdicts.",
)  # fmt: skip
asyncapi.publishes(
    subjects.SECRETS_CHANGED, SecretsChanged, by="keys",
    description="A secret was deleted or its value replaced (ids only); runners drop what they cached of it.",
)  # fmt: skip


async def announce_revoked(broker: NatsBroker, endpoint_id: str, key_id: str | None = None) -> None:
    """Tell every gateway to drop cached verdicts for this endpoint (core NATS: all replicas hear it)."""
    await broker.publish(KeysRevoked(endpoint_id=endpoint_id, key_id=key_id), subjects.KEYS_REVOKED)


async def announce_changed(broker: NatsBroker, secret_id: str) -> None:
    """Tell every runner to drop its cached value of this secret, before the change is acknowledged: the reply
    leaves on the same connection after this broadcast (core NATS: every runner replica hears it)."""
    await broker.publish(SecretsChanged(secret_ids=[secret_id]), subjects.SECRETS_CHANGED)


@router.subscriber(subjects.KEYS_ISSUE, queue=QUEUE)
@serve
async def issue_key(cmd: IssueKey, broker: NatsBroker, keys: KeysDep) -> IssuedKey:
    async with keys.unit_of_work() as repo:
        issued = await keys.service.issue(repo, cmd.endpoint_id, cmd.owner_id, cmd.grace_seconds)
    # Cached verdicts of the replaced key are dropped; the next verification caches its grace period's end.
    await announce_revoked(broker, cmd.endpoint_id)
    return issued


@router.subscriber(subjects.KEYS_CREATE, queue=QUEUE)
@serve
async def create_key(cmd: CreateKey, keys: KeysDep) -> CreatedKey:
    async with keys.unit_of_work() as repo:
        return await keys.service.create(repo, cmd)


@router.subscriber(subjects.KEYS_LIST, queue=QUEUE)
@serve
async def list_keys(cmd: ListKeys, keys: KeysDep) -> KeyList:
    async with keys.unit_of_work() as repo:
        return KeyList(keys=[key_info(k) for k in await repo.keys(cmd.endpoint_id, cmd.key_id)])


@router.subscriber(subjects.KEYS_UPDATE, queue=QUEUE)
@serve
async def update_key(cmd: UpdateKey, broker: NatsBroker, keys: KeysDep) -> KeyInfo:
    async with keys.unit_of_work() as repo:
        info = await keys.service.update(repo, cmd.endpoint_id, cmd.key_id, cmd.model_dump(include=set(cmd.sent)))
    await announce_revoked(broker, cmd.endpoint_id, cmd.key_id)  # gateways re-read its expiry and limits
    return info


@router.subscriber(subjects.KEYS_USED, queue=QUEUE)
@serve
async def keys_used(cmd: KeysUsed, keys: KeysDep) -> Done:
    async with keys.unit_of_work() as repo:
        await repo.mark_used(cmd.used)
    return Done()


@router.subscriber(subjects.KEYS_VERIFY, queue=QUEUE)
@serve
async def verify_key(cmd: VerifyKey, keys: KeysDep) -> VerifiedKey:
    try:
        async with keys.unit_of_work() as repo:
            verdict = await keys.service.verify(repo, cmd.api_key)
    except AgentryError as err:
        metrics.VERIFICATIONS.labels(err.code).inc()
        raise
    metrics.VERIFICATIONS.labels("valid").inc()
    return verdict


@router.subscriber(subjects.KEYS_REVOKE, queue=QUEUE)
@serve
async def revoke_key(cmd: RevokeKey, broker: NatsBroker, keys: KeysDep) -> Done:
    async with keys.unit_of_work() as repo:
        if cmd.key_id is None:
            await repo.delete_keys(cmd.endpoint_id)
        else:
            await keys.service.revoke(repo, cmd.endpoint_id, cmd.key_id)
    await announce_revoked(broker, cmd.endpoint_id, cmd.key_id)
    return Done()


@router.subscriber(subjects.SECRETS_STORE, queue=QUEUE)
@serve
async def store_secret(cmd: StoreSecret, broker: NatsBroker, keys: KeysDep) -> StoredSecret:
    async with keys.unit_of_work() as repo:
        secret_id = await keys.service.store_secret(repo, cmd.owner_id, cmd.value, cmd.secret_id)
    if cmd.secret_id is not None:  # a value replaced in place: cached copies of the old one must go
        await announce_changed(broker, secret_id)
    return StoredSecret(secret_id=secret_id)


@router.subscriber(subjects.SECRETS_DELETE, queue=QUEUE)
@serve
async def delete_secret(cmd: DeleteSecret, broker: NatsBroker, keys: KeysDep) -> Done:
    async with keys.unit_of_work() as repo:
        await repo.delete_secret(cmd.secret_id)
    await announce_changed(broker, cmd.secret_id)
    return Done()


@router.subscriber(subjects.SECRETS_RESOLVE, queue=QUEUE)
@serve
async def resolve_secret(cmd: ResolveSecret, keys: KeysDep) -> ResolvedSecret:
    try:
        async with keys.unit_of_work() as repo:
            value = await keys.service.resolve_secret(repo, cmd.secret_id, cmd.owner_id)
        resolved = _sealed(value, cmd)
    except AgentryError as err:
        metrics.SECRETS_RESOLVED.labels(err.code).inc()
        raise
    metrics.SECRETS_RESOLVED.labels("resolved").inc()
    return resolved


def _sealed(value: str, cmd: ResolveSecret) -> ResolvedSecret:
    """The value sealed to the asker's key and bound to the secret's id: nobody else can read it off the bus."""
    try:
        return ResolvedSecret(sealed=seal(value, cmd.reply_key, cmd.secret_id))
    except ValueError as err:
        raise BadRequest(str(err), code="bad_reply_key") from None
