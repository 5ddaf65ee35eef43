"""Least privilege on the bus, against the real local nats-server the launcher configures (the same
permissions `make run` uses): each service can do its own job and nothing else."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client

from agentry_common import subjects
from agentry_common.errors import AgentryError, NotFound
from agentry_common.requests import ResolvedSecret, ResolveSecret
from agentry_common.rpc import call
from agentry_common.sealed import ReplyKey
from agentry_common.subjects import inbox_prefix
from agentry_dev.stack import Stack


async def _connect_as(stack: Stack, service: str, errors: list[Exception]) -> Client:
    assert stack.nats is not None
    creds = stack.nats.credentials(service)
    assert creds is not None, "the test stack runs NATS with per-service users"

    async def on_error(err: Exception) -> None:
        errors.append(err)

    return await nats.connect(
        stack.nats.bare_url, user=creds[0], password=creds[1], error_cb=on_error, inbox_prefix=inbox_prefix(service)
    )


async def test_gateway_credentials_cannot_resolve_a_secret_but_the_runners_can(stack: Stack) -> None:
    errors: list[Exception] = []
    gateway = await _connect_as(stack, "gateway", errors)
    runner = await _connect_as(stack, "runner", errors)
    try:
        ask = ResolveSecret(secret_id="sec_missing", owner_id="nobody", reply_key=ReplyKey().public)
        with pytest.raises(AgentryError) as refused:
            await call(gateway, subjects.SECRETS_RESOLVE, ask, ResolvedSecret, timeout=1.0)
        assert refused.value.status_code == 503  # nobody answered: the server dropped the request
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        # the runner reaches the keys service, which answers (not found, but it answered)
        with pytest.raises(NotFound):
            await call(runner, subjects.SECRETS_RESOLVE, ask, ResolvedSecret, timeout=3.0)
    finally:
        await gateway.close()
        await runner.close()


@pytest.mark.parametrize(
    ("service", "subject"),
    [
        ("gateway", subjects.CHARGE_COLLECTED),  # only billing announces charges
        ("runner", subjects.RUN_REQUESTED),  # only the gateway starts runs
        ("billing", subjects.RUN_COMPLETED),  # only the runner reports outcomes
        ("keys", subjects.RUN_REQUESTED),
    ],
)
async def test_a_service_cannot_publish_another_services_events(stack: Stack, service: str, subject: str) -> None:
    errors: list[Exception] = []
    client = await _connect_as(stack, service, errors)
    try:
        await client.publish(subject, b"{}")
        await client.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("service", "operation"),
    [
        ("runner", f"$JS.API.STREAM.PURGE.{subjects.RUNS_STREAM.name}"),
        ("billing", f"$JS.API.STREAM.DELETE.{subjects.RUN_EVENTS_STREAM.name}"),
        ("webhooks", f"$JS.API.CONSUMER.DELETE.{subjects.RUN_EVENTS_STREAM.name}.{subjects.BILLING_CONSUMER}"),
        ("keys", f"$JS.API.STREAM.MSG.DELETE.{subjects.BILLING_EVENTS_STREAM.name}"),
        ("gateway", f"$JS.API.STREAM.MSG.DELETE.{subjects.RUNS_STREAM.name}"),  # its limiter's streams only
    ],
)
async def test_no_service_can_delete_or_purge_what_jetstream_stores(stack: Stack, service: str, operation: str) -> None:
    """JetStream's API is open to the services, its destructive half is not: a compromised service cannot drop
    the run queue, the events billing charges from, or another service's consumer."""
    errors: list[Exception] = []
    client = await _connect_as(stack, service, errors)
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):  # dropped by the server
            await client.request(operation, b'{"seq": 1}' if "MSG.DELETE" in operation else b"", timeout=1.0)
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        info = await client.jetstream().stream_info(subjects.RUNS_STREAM.name)  # the rest of the API answers
        assert info.config.name == subjects.RUNS_STREAM.name
    finally:
        await client.close()


def test_kubernetes_nats_users_get_exactly_the_permissions_of_the_table() -> None:
    """deploy/ must not drift from bus_permissions: production runs what development and tests run."""
    from pathlib import Path

    import yaml

    from agentry_dev.bus_permissions import SERVICE_PERMISSIONS, permissions

    values = yaml.safe_load(Path("deploy/nats/values.yaml").read_text())
    users = {u["user"]: u for u in values["config"]["merge"]["authorization"]["users"]}
    assert set(users) == set(SERVICE_PERMISSIONS)
    for service, user in users.items():
        expected = permissions(service)
        assert user["permissions"]["publish"]["allow"] == expected["publish"], service
        assert user["permissions"]["publish"].get("deny", []) == expected["deny_publish"], service
        assert user["permissions"]["subscribe"]["allow"] == expected["subscribe"], service
        assert user["permissions"].get("allow_responses", False) == expected["allow_responses"], service
    dev = Path("deploy/k8s/overlays/dev/nats.yaml").read_text()
    for service in SERVICE_PERMISSIONS:
        expected = permissions(service)
        line = next(line for line in dev.splitlines() if f"{{user: {service}," in line)
        assert str(expected["publish"]).replace("'", '"') in line, service
        assert str(expected["subscribe"]).replace("'", '"') in line, service
        assert f"deny: {expected['deny_publish']}".replace("'", '"') in line, service
        assert ("allow_responses: true" in line) == expected["allow_responses"], service


async def test_the_subscriber_user_manages_its_own_consumers_and_cannot_touch_billings(stack: Stack) -> None:
    """A platform subscriber (the webhook forwarder's user) reads events through its own durable consumers;
    it cannot publish an event, nor update or delete billing's consumer through the same consumer API."""
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    from agentry_dev.bus_permissions import WEBHOOK_FORWARDER

    assert stack.nats is not None
    user = stack.nats.user(WEBHOOK_FORWARDER)
    assert user is not None, "the test stack runs NATS with users"
    errors: list[Exception] = []

    async def on_error(err: Exception) -> None:
        errors.append(err)

    client = await nats.connect(
        stack.nats.bare_url, user=user[0], password=user[1], error_cb=on_error, inbox_prefix=inbox_prefix(user[0])
    )
    js = client.jetstream(timeout=1.0)
    stream = subjects.RUN_EVENTS_STREAM.name
    try:
        own = ConsumerConfig(durable_name=WEBHOOK_FORWARDER, filter_subject=subjects.RUN_COMPLETED,
                             deliver_policy=DeliverPolicy.NEW)  # fmt: skip
        await js.add_consumer(stream, own)
        assert (await js.consumer_info(stream, WEBHOOK_FORWARDER)).name == WEBHOOK_FORWARDER
        with pytest.raises(TimeoutError):  # no reply at all: the server drops the request
            await js.delete_consumer(stream, subjects.BILLING_CONSUMER)
        with pytest.raises(TimeoutError):
            await js.add_consumer(stream, ConsumerConfig(durable_name=subjects.BILLING_CONSUMER,
                                                         filter_subject=subjects.RUN_FAILED))  # fmt: skip
        await client.publish(subjects.RUN_COMPLETED, b"{}")
        await client.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        await js.delete_consumer(stream, WEBHOOK_FORWARDER)
        with pytest.raises(NotFoundError):
            await js.consumer_info(stream, WEBHOOK_FORWARDER)
    finally:
        await client.close()
    admin = stack.nats.url
    async with await nats.connect(admin) as nc:  # billing's consumer is untouched
        info = await nc.jetstream().consumer_info(stream, subjects.BILLING_CONSUMER)
        assert info.config.filter_subject is None  # as billing set it: run.completed and run.failed
        assert info.config.filter_subjects == [subjects.RUN_COMPLETED, subjects.RUN_FAILED]
