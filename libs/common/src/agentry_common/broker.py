"""Broker plumbing: the FastStream `NatsBroker` factory, JetStream stream declarations, event publishing."""

from __future__ import annotations

import logging

from faststream.nats import JStream, NatsBroker
from faststream.nats.security import NatsUserPassword
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .events import Event
from .settings import ServiceSettings
from .subjects import STREAMS, StreamSpec, inbox_prefix

log = logging.getLogger(__name__)


def make_broker(settings: ServiceSettings, name: str) -> NatsBroker:
    """The service's one NATS connection. Its inboxes (request replies, JetStream API answers, pull deliveries:
    nats-py takes them all from the connection's prefix) are `_INBOX_<user>`, the only ones its user may read."""
    security = None
    if settings.nats_user and settings.nats_password:
        security = NatsUserPassword(settings.nats_user, settings.nats_password)
    return NatsBroker(
        settings.nats_url.split(","),
        name=name,
        security=security,
        inbox_prefix=inbox_prefix(settings.nats_user),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"agentry.{name}.broker"),
        log_level=logging.DEBUG,
    )


def pull_inbox(settings: ServiceSettings) -> bytes:
    """The inbox prefix of a FastStream pull subscriber: FastStream sets it per subscriber (default `_INBOX.`,
    which no service user may read), not from the broker's connection."""
    return f"{inbox_prefix(settings.nats_user)}.".encode()


def jstream(spec: StreamSpec) -> JStream:
    """The FastStream handle of a stream; streams are declared by `ensure_streams`, not by FastStream."""
    return JStream(spec.name, declare=False)


def _config(spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=spec.subjects,
        description=spec.description,
        retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
        allow_atomic=spec.atomic_publish or None,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update every stream so any service can start first (all services use the same `replicas`)."""
    for spec in STREAMS:
        config = _config(spec, replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def publish_event(js: JetStreamContext, subject: str, event: Event, timeout: float = 5.0) -> None:
    """Publish to JetStream and wait for the stream's ack; `Nats-Msg-Id` lets the broker drop replays."""
    await js.publish(
        subject,
        event.model_dump_json().encode(),
        timeout=timeout,
        headers={"Nats-Msg-Id": event.msg_id()},
    )
