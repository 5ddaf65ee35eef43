"""Payments fixtures: the fake Stripe API on loopback (tools/fake_stripe.py, shared with `make chaos`), and
billing in `stripe` payment mode behind a gateway.

The fake is a real HTTP server speaking what the `stripe` library sends (form-encoded requests with nested
`a[b][0]` keys, `Idempotency-Key` headers, a bearer secret key) and answers objects shaped as the library's own
classes read them. Every request's parameters are checked against the library's `*CreateParams` TypedDicts,
so a misspelt or unknown parameter fails the test instead of reaching Stripe. Webhook payloads are signed
with Stripe's documented scheme (`t=…,v1=HMAC-SHA256(secret, "{t}.{payload}")`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agentry_common import subjects
from agentry_common.broker import ensure_streams
from agentry_dev.stack import Service, Stack, dev_token
from agentry_dev.testing import serve_asgi
from tools.fake_stripe import PUBLIC_URL, SECRET_KEY, WEBHOOK_SECRET, FakeStripe, event, sign


@dataclass
class Payments:
    """Billing in stripe mode (two replicas, one queue group) behind a gateway, with the fake Stripe."""

    stripe: FakeStripe
    gateway: str
    replicas: list[Service]
    consumer: str
    sign = staticmethod(sign)
    event = staticmethod(event)

    @staticmethod
    def auth(owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {dev_token(owner)}"}

    async def deposit(self, http: httpx.AsyncClient, owner: str, amount: int, key: str | None = None) -> Any:
        headers = {**self.auth(owner), "Idempotency-Key": key or uuid.uuid4().hex}
        return await http.post(f"{self.gateway}/api/balance/deposit", json={"amount_cents": amount}, headers=headers)

    async def post_event(self, http: httpx.AsyncClient, payload: str, signature: str | None = None) -> Any:
        headers = {"Stripe-Signature": sign(payload) if signature is None else signature,
                   "Content-Type": "application/json"}  # fmt: skip
        return await http.post(f"{self.gateway}/api/payments/stripe/webhook", content=payload, headers=headers)

    async def paid_deposit(self, http: httpx.AsyncClient, owner: str, amount: int) -> tuple[str, dict[str, Any]]:
        """A Checkout deposit paid and confirmed by both of Stripe's events: (deposit id, its PaymentIntent)."""
        answer = await self.deposit(http, owner, amount)
        assert answer.status_code == 201, answer.text
        deposit = answer.json()["deposit"]
        session_id = deposit["checkout_url"].rsplit("/", 1)[1]
        session, intent = self.stripe.pay(session_id)
        for payload in (event("checkout.session.completed", session), event("payment_intent.succeeded", intent)):
            reply = await self.post_event(http, payload)
            assert reply.status_code == 200, reply.text
        return deposit["id"], intent


@pytest.fixture(scope="session")
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    fake.url, stop = await serve_asgi(fake.app())
    yield fake
    await stop()


@pytest.fixture(scope="module")
async def payments(servers: Stack, fake_stripe: FakeStripe) -> AsyncIterator[Payments]:
    """Two billing replicas in stripe mode on a durable consumer of their own, and a gateway before them."""
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    stream = subjects.RUN_EVENTS_STREAM.name
    consumer = f"billing-payments-{uuid.uuid4().hex[:8]}"
    info = await js.stream_info(stream)
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=consumer, filter_subject=subjects.RUN_COMPLETED,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=info.state.last_seq + 1,
        ack_policy=AckPolicy.EXPLICIT, ack_wait=5, max_deliver=-1,
    ))  # fmt: skip
    env = {
        "PAYMENT_MODE": "stripe", "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake_stripe.url, "PUBLIC_URL": PUBLIC_URL, "CHARGE_CONSUMER": consumer,
        "CHARGE_BATCH_SIZE": "5",
    }  # fmt: skip
    started: list[Service] = []
    # The session's own billing (manual mode), if another test started the whole stack first, answers the
    # same RPC subjects in the same queue group: it is stopped for the module and started again after it.
    manual = servers.primary.get("billing")
    if manual is not None:
        await asyncio.to_thread(manual.stop)
        servers.services.remove(manual)
    try:
        # Started together and then awaited: three imports at once, not one after another (~3 s each here).
        for name, extra in (("billing", env), ("billing", env), ("gateway", {})):
            started.append(servers.start_service(name, wait=False, **extra))
        await asyncio.gather(*(asyncio.to_thread(svc.wait_ready) for svc in started))
        yield Payments(fake_stripe, started[-1].url, started[:2], consumer)
    finally:
        for svc in started:
            svc.stop()
            if svc in servers.services:
                servers.services.remove(svc)
        if manual is not None:
            servers.primary["billing"] = await asyncio.to_thread(servers.start_service, "billing", manual.port)
        await js.delete_consumer(stream, consumer)
        await nc.drain()


@pytest.fixture
def owner() -> Iterator[str]:
    yield f"user-{uuid.uuid4().hex[:12]}"
