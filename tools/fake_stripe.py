"""A fake Stripe API on loopback, for the billing payments tests and `make chaos` (dev only: never imported by a
service).

The fake is a real HTTP server speaking what the `stripe` library sends (form-encoded requests with nested
`a[b][0]` keys, `Idempotency-Key` headers, a bearer secret key) and answers objects shaped as the library's own
classes read them. Every request's parameters are checked against the library's `*CreateParams` TypedDicts,
so a misspelt or unknown parameter is refused (and kept in `errors`) instead of reaching Stripe. Webhook
payloads are signed with Stripe's documented scheme (`t=…,v1=HMAC-SHA256(secret, "{t}.{payload}")`).

It also remembers what a real Stripe account would show afterwards — which Checkout Sessions were paid, what
was refunded and disputed — so a test or the chaos tool can hold billing's books against it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
import stripe
import stripe.params as stripe_params
import stripe.params.checkout._session_create_params as session_params
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentry_dev.testing import Stop, serve_asgi

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
    assert obj.id == data["id"] and obj.object == data["object"]  # type: ignore[attr-defined]
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
    refunded: dict[str, int] = field(default_factory=dict)  # PaymentIntent id → cents refunded so far
    disputed: dict[str, tuple[str, int]] = field(default_factory=dict)  # dispute id → (PaymentIntent id, cents)
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

    def paid_deposits(self) -> dict[str, int]:
        """Our deposit id → cents, for every Checkout Session the customer paid: what Stripe's dashboard shows."""
        return {
            s["client_reference_id"]: int(s["amount_total"])
            for s in self.sessions.values() if s["payment_status"] == "paid" and s.get("client_reference_id")
        }  # fmt: skip

    def taken_back(self) -> dict[str, int]:
        """PaymentIntent id → cents refunded and disputed on it."""
        back = dict(self.refunded)
        for intent_id, amount in self.disputed.values():
            back[intent_id] = back.get(intent_id, 0) + amount
        return back

    def off_session_intents(self, customer_id: str) -> list[dict[str, Any]]:
        return [i for i in self.intents.values() if i["customer"] == customer_id and i["off_session"] == "true"]

    def charge(self, intent: dict[str, Any], amount_refunded: int) -> dict[str, Any]:
        """The Charge of a refund (`amount_refunded` is cumulative, as Stripe's): what `charge.refunded` carries."""
        self.refunded[intent["id"]] = max(self.refunded.get(intent["id"], 0), amount_refunded)
        return _shaped(stripe.Charge, {
            "id": "ch_" + intent["id"][3:], "object": "charge", "amount": intent["amount"],
            "amount_refunded": amount_refunded, "refunded": amount_refunded >= intent["amount"],
            "payment_intent": intent["id"], "currency": intent["currency"], "customer": intent["customer"],
            "livemode": False, "paid": True, "status": "succeeded",
        })  # fmt: skip

    def dispute(self, intent: dict[str, Any], amount: int) -> dict[str, Any]:
        """A new dispute of `amount` on the intent's charge: what `charge.dispute.created` carries."""
        dispute_id = f"dp_{uuid.uuid4().hex[:20]}"
        self.disputed[dispute_id] = (intent["id"], amount)
        return _shaped(stripe.Dispute, {
            "id": dispute_id, "object": "dispute", "amount": amount,
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


async def serve(fake: FakeStripe, port: int) -> Stop:
    """Serve the fake on 127.0.0.1:`port` in the running loop (the port is chosen before the services that call
    it start); returns an async `stop`."""
    fake.url, stop = await serve_asgi(fake.app(), port=port)
    return stop
