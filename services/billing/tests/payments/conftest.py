"""Payments fixtures: a fake Stripe API on loopback, and billing in `stripe` payment mode behind a gateway.

The fake is a real HTTP server speaking what the `stripe` library sends (form-encoded requests with nested
`a[b][0]` keys, `Idempotency-Key` headers, a bearer secret key) and answers objects shaped as the library's own
classes read them. Every request's parameters are checked against the library's `*CreateParams` TypedDicts,
so a misspelt or unknown parameter fails the test instead of reaching Stripe. Webhook payloads are signed
with Stripe's documented scheme (`t=…,v1=HMAC-SHA256(secret, "{t}.{payload}")`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import nats
import orjson
import pytest
import stripe
import stripe.params as stripe_params
import stripe.params.checkout._session_create_params as session_params
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentry_common import subjects
from agentry_common.broker import ensure_streams
from agentry_common.stack import Service, Stack, dev_token
from agentry_common.testing import serve_asgi

# The marker `sk-test-secret-` lets the session's secrets scan (tests/test_zz_secrets_scan.py) look for them.
SECRET_KEY = "sk-test-secret-stripe-" + uuid.uuid4().hex
WEBHOOK_SECRET = "sk-test-secret-whsec-" + uuid.uuid4().hex
PUBLIC_URL = "https://agentry.example"


def _unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`line_items[0][price_data][currency]=usd` → nested dicts, lists where every key is an index."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: listify(v) for k, v in node.items()}
            if node and all(k.isdigit() for k in node):
                return [node[k] for k in sorted(node, key=int)]
        return node

    return listify(root)  # type: ignore[no-any-return]


def check_params(params: dict[str, Any], typed: Any, namespace: dict[str, Any]) -> None:
    """Every key is one the stripe library's TypedDict declares; required ones are present; nested TypedDicts
    (named by forward reference in the same module) are checked the same way."""
    annotations = typed.__annotations__
    unknown = set(params) - set(annotations)
    assert not unknown, f"{typed.__name__}: unknown parameters {sorted(unknown)}"
    missing = set(typed.__required_keys__) - set(params)
    assert not missing, f"{typed.__name__}: missing required parameters {sorted(missing)}"
    for key, value in params.items():
        names = re.findall(r"ForwardRef\('(\w+)'\)", str(annotations[key]))
        nested = [namespace[n] for n in names if n in namespace and hasattr(namespace[n], "__required_keys__")]
        if len(nested) != 1:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                check_params(item, nested[0], namespace)


_CREATE_PARAMS = {
    "/v1/customers": (stripe_params.CustomerCreateParams, vars(stripe_params._customer_create_params)),
    "/v1/checkout/sessions": (session_params.SessionCreateParams, vars(session_params)),
    "/v1/payment_intents": (stripe_params.PaymentIntentCreateParams, vars(stripe_params._payment_intent_create_params)),
}


def _shaped(cls: type[stripe.StripeObject], data: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a Stripe object, checked to build the library's class with the fields our code reads."""
    obj = cls.construct_from(data, SECRET_KEY)
    assert obj.id == data["id"] and obj.object == data["object"]
    return data


@dataclass
class Seen:
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class FakeStripe:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    declined_customers: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    down: bool = False  # answer 503 (and tell the library not to retry) to everything
    _replies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return JSONResponse({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}, 401)
        path = request.url.path
        if self.down:
            error = {"type": "api_error", "message": "Stripe is having a bad day."}
            return JSONResponse({"error": error}, 503, headers={"Stripe-Should-Retry": "false"})
        if request.method == "GET":
            found = {**self.customers, **self.sessions, **self.intents}.get(path.rsplit("/", 1)[-1])
            return JSONResponse(found) if found else JSONResponse({"error": {"type": "invalid_request_error"}}, 404)
        body = (await request.body()).decode()
        params = _unflatten(parse_qsl(body, keep_blank_values=True))
        key = request.headers.get("idempotency-key")
        self.requests.append(Seen(path, params, key))
        typed, namespace = _CREATE_PARAMS[path]
        try:
            check_params(params, typed, namespace)
        except AssertionError as err:  # what real Stripe would refuse: the test reads `errors`
            self.errors.append(str(err))
            return JSONResponse({"error": {"type": "invalid_request_error", "message": str(err)}}, 400)
        if key and (path, key) in self._replies:  # Stripe's idempotency: the first answer, again
            return JSONResponse(self._replies[(path, key)])
        if path == "/v1/customers":
            reply = self._customer(params)
        elif path == "/v1/checkout/sessions":
            reply = self._session(params)
        else:
            if params["customer"] in self.declined_customers:
                error = {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}
                return JSONResponse({"error": error}, 402)
            reply = self._intent(params, status="succeeded")
        if key:
            self._replies[(path, key)] = reply
        return JSONResponse(reply)

    def _customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = _shaped(stripe.Customer, {
            "id": f"cus_{uuid.uuid4().hex[:14]}", "object": "customer", "created": int(time.time()),
            "livemode": False, "metadata": params.get("metadata", {}), "description": params.get("description"),
        })  # fmt: skip
        self.customers[customer["id"]] = customer
        return customer

    def _session(self, params: dict[str, Any]) -> dict[str, Any]:
        assert params["mode"] == "payment"
        item = params["line_items"][0]
        sid = f"cs_test_{uuid.uuid4().hex}"
        session = _shaped(stripe.checkout.Session, {
            "id": sid, "object": "checkout.session", "mode": "payment", "status": "open",
            "payment_status": "unpaid", "url": f"{self.url}/pay/{sid}", "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata", {}),
            "amount_total": int(item["price_data"]["unit_amount"]) * int(item["quantity"]),
            "currency": item["price_data"]["currency"], "payment_intent": None, "livemode": False,
            "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
            "created": int(time.time()), "expires_at": int(time.time()) + 86400,
        })  # fmt: skip
        session["_payment_intent_data"] = params.get("payment_intent_data", {})
        self.sessions[sid] = session
        return {k: v for k, v in session.items() if not k.startswith("_")}

    def _intent(self, params: dict[str, Any], status: str) -> dict[str, Any]:
        intent = _shaped(stripe.PaymentIntent, {
            "id": f"pi_{uuid.uuid4().hex[:20]}", "object": "payment_intent", "amount": int(params["amount"]),
            "amount_received": int(params["amount"]) if status == "succeeded" else 0,
            "currency": params["currency"], "customer": params.get("customer"), "status": status,
            "payment_method": params.get("payment_method") or f"pm_{uuid.uuid4().hex[:14]}",
            "metadata": params.get("metadata", {}), "setup_future_usage": params.get("setup_future_usage"),
            "off_session": params.get("off_session"), "livemode": False, "created": int(time.time()),
        })  # fmt: skip
        self.intents[intent["id"]] = intent
        return intent

    # --- what Stripe would do when the customer pays, and the events it would send ---

    def pay(self, session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The customer paid on the Checkout page: the session completes and its PaymentIntent succeeds."""
        session = self.sessions[session_id]
        pid = session["_payment_intent_data"]
        intent = self._intent({"amount": session["amount_total"], "currency": session["currency"],
                               "customer": session["customer"], "metadata": pid.get("metadata", {}),
                               "setup_future_usage": pid.get("setup_future_usage")}, status="succeeded")  # fmt: skip
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return {k: v for k, v in session.items() if not k.startswith("_")}, intent

    def off_session_intents(self, customer_id: str) -> list[dict[str, Any]]:
        return [i for i in self.intents.values() if i["customer"] == customer_id and i["off_session"] == "true"]

    @staticmethod
    def charge(intent: dict[str, Any], amount_refunded: int) -> dict[str, Any]:
        return _shaped(stripe.Charge, {
            "id": "ch_" + intent["id"][3:], "object": "charge", "amount": intent["amount"],
            "amount_refunded": amount_refunded, "refunded": amount_refunded >= intent["amount"],
            "payment_intent": intent["id"], "currency": intent["currency"], "customer": intent["customer"],
            "livemode": False, "paid": True, "status": "succeeded",
        })  # fmt: skip

    @staticmethod
    def dispute(intent: dict[str, Any], amount: int) -> dict[str, Any]:
        return _shaped(stripe.Dispute, {
            "id": f"dp_{uuid.uuid4().hex[:20]}", "object": "dispute", "amount": amount,
            "charge": "ch_" + intent["id"][3:], "payment_intent": intent["id"], "currency": intent["currency"],
            "reason": "fraudulent", "status": "needs_response", "livemode": False,
        })  # fmt: skip


def event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    """A webhook payload as Stripe sends it (an `Event` the library can read back)."""
    data = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": stripe.api_version,
        "created": int(time.time()), "type": event_type, "data": {"object": obj}, "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
    }  # fmt: skip
    stripe.Event.construct_from(data, SECRET_KEY)
    return orjson.dumps(data).decode()


def sign(payload: str, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """Stripe's `Stripe-Signature` header: https://docs.stripe.com/webhooks#verify-manually."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


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
    try:
        for name, extra in (("billing", env), ("billing", env), ("gateway", {})):
            started.append(await asyncio.to_thread(servers.start_service, name, **extra))
        yield Payments(fake_stripe, started[-1].url, started[:2], consumer)
    finally:
        for svc in started:
            svc.stop()
            if svc in servers.services:
                servers.services.remove(svc)
        await js.delete_consumer(stream, consumer)
        await nc.drain()


@pytest.fixture
def owner() -> Iterator[str]:
    yield f"user-{uuid.uuid4().hex[:12]}"
