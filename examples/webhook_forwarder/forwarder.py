"""Forward Agentry's `run.completed` and `billing.charge.*` events to a webhook, at least once.

A FastStream app with one durable pull consumer per stream (`RUN_EVENTS`, `BILLING_EVENTS`), both named
`FORWARDER_DURABLE`: JetStream remembers how far it got, so events published while the forwarder is down
(or failing) are delivered when it is back. An event is acknowledged only after the webhook answered 2xx;
otherwise it is retried in place, then handed back to JetStream to be redelivered after `RETRY_DELAY_S`.
Nothing is ever dropped, so the webhook must deduplicate on `X-Agentry-Event-Id`.

Each POST carries the event's JSON exactly as Agentry published it (schemas: docs/asyncapi.json) and:
- `X-Agentry-Event-Id`: the event's natural key (`run.completed:<run_id>`), the same on every redelivery;
- `X-Agentry-Event-Type`: `run.completed`, `billing.charge.collected` or `billing.charge.uncollected`;
- `X-Agentry-Signature: sha256=<hex>`: HMAC-SHA256 of the body with `WEBHOOK_SECRET`, when one is set;
- `traceparent`: the run's W3C trace context, when Agentry traces, so the receiver can join the trace.

Run it with `python forwarder.py`; configuration is in the environment (see `Config`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import httpx
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.security import NatsUserPassword
from nats.js.api import DeliverPolicy

log = logging.getLogger("webhook_forwarder")


@dataclass(frozen=True)
class Config:
    nats_url: str = field(default_factory=lambda: os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    nats_user: str | None = field(default_factory=lambda: os.environ.get("NATS_USER"))
    nats_password: str = field(default_factory=lambda: os.environ.get("NATS_PASSWORD", ""))
    # Where JetStream answers and pulled events come: `_INBOX_<user>`, the only inboxes Agentry's NATS lets
    # this user read (no account can read another's replies). `_INBOX`, nats' default, on an open server.
    inbox_prefix: str = field(
        default_factory=lambda: (
            os.environ.get("NATS_INBOX_PREFIX")
            or (f"_INBOX_{os.environ['NATS_USER']}" if os.environ.get("NATS_USER") else "_INBOX")
        )
    )
    webhook_url: str = field(default_factory=lambda: os.environ["WEBHOOK_URL"])
    webhook_secret: str = field(default_factory=lambda: os.environ.get("WEBHOOK_SECRET", ""))
    timeout_s: float = field(default_factory=lambda: float(os.environ.get("WEBHOOK_TIMEOUT_S", "10")))
    attempts: int = field(default_factory=lambda: int(os.environ.get("WEBHOOK_ATTEMPTS", "3")))
    retry_delay_s: float = field(default_factory=lambda: float(os.environ.get("RETRY_DELAY_S", "30")))
    # The consumers' name: one per stream. Two forwarders with the same name share the work.
    durable: str = field(default_factory=lambda: os.environ.get("FORWARDER_DURABLE", "webhook-forwarder"))
    # Where a new consumer starts: `new` (events from now on) or `all` (what the streams still hold).
    start_at: str = field(default_factory=lambda: os.environ.get("FORWARDER_START", "new"))


class Webhook:
    def __init__(self, config: Config):
        self.config = config
        self.client = httpx.AsyncClient(timeout=config.timeout_s)

    def headers(self, body: bytes, event_id: str, event_type: str, event: dict[str, Any]) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "x-agentry-event-id": event_id,
            "x-agentry-event-type": event_type,
        }
        if self.config.webhook_secret:
            digest = hmac.new(self.config.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-agentry-signature"] = f"sha256={digest}"
        trace = event.get("trace") or {}
        if isinstance(trace, dict) and isinstance(trace.get("traceparent"), str):
            headers["traceparent"] = trace["traceparent"]
        return headers

    async def deliver(self, body: bytes, headers: dict[str, str]) -> bool:
        """POST the event, retrying in place with backoff; True once the webhook answered 2xx."""
        for attempt in range(self.config.attempts):
            if attempt:
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
            try:
                response = await self.client.post(self.config.webhook_url, content=body, headers=headers)
            except httpx.HTTPError as err:
                log.warning("webhook unreachable (%s)", type(err).__name__)
                continue
            if response.is_success:
                return True
            log.warning("webhook answered %d", response.status_code)
        return False


def build(config: Config) -> FastStream:
    security = NatsUserPassword(config.nats_user, config.nats_password) if config.nats_user else None
    broker = NatsBroker(
        config.nats_url.split(","), security=security, inbox_prefix=config.inbox_prefix, max_reconnect_attempts=-1
    )
    webhook = Webhook(config)
    start_at = DeliverPolicy.ALL if config.start_at == "all" else DeliverPolicy.NEW

    async def forward(event: dict[str, Any], message: NatsMessage) -> None:
        raw = message.raw_message
        event_id = (raw.headers or {}).get("Nats-Msg-Id") or f"{raw.subject}:{event.get('id')}"
        if await webhook.deliver(message.body, webhook.headers(message.body, event_id, raw.subject, event)):
            await message.ack()
        else:  # JetStream keeps it and redelivers it later: nothing is lost while the webhook is down
            await message.nack(delay=config.retry_delay_s)

    for subject, stream in (("run.completed", "RUN_EVENTS"), ("billing.charge.*", "BILLING_EVENTS")):
        broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),  # Agentry owns its streams; we only add consumers
            durable=config.durable,
            deliver_policy=start_at,
            pull_sub=PullSub(batch_size=1, timeout=5.0),
            inbox_prefix=f"{config.inbox_prefix}.".encode(),  # FastStream would use `_INBOX.` here, not the broker's
            ack_policy=AckPolicy.MANUAL,
            title=f"{subject} → webhook",
        )(forward)

    app = FastStream(broker)

    @app.after_startup
    async def announce() -> None:
        log.info("forwarding run.completed and billing.charge.* to the webhook as %r", config.durable)

    @app.after_shutdown
    async def close() -> None:
        await webhook.client.aclose()

    return app


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines would print the URL's credentials
    asyncio.run(build(Config()).run())
