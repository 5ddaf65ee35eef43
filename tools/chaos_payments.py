"""The payments side of `make chaos`: billing runs in `stripe` mode against the fake Stripe (tools/fake_stripe.py)
and money comes in as Stripe would bring it, while processes crash.

Every deposit is a Checkout Session opened through the gateway (retried with its Idempotency-Key until
answered), paid on the fake, and confirmed by signed webhooks posted to the gateway the way Stripe delivers
them: until a 2xx, re-signed each time, several copies at once, `payment_intent.succeeded` before or after
`checkout.session.completed`, one more copy seconds later, and every event again after each billing kill -9
(a burst is in flight when the kill lands) and once more after the load. Some checkouts are abandoned
(`checkout.session.expired`); a few paid deposits are refunded (twice, cumulatively, each event replayed) or
disputed. What the fake saw paid and taken back goes to `Books` for `chaos_checks.check`.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tools import fake_stripe
from tools.fake_stripe import FakeStripe

from .chaos_checks import Books

WEBHOOK = "/api/payments/stripe/webhook"


def _code(r: httpx.Response) -> str:
    """The error code of an answer (`service_unavailable`, `database_unavailable`, …), for the tally."""
    try:
        return str(r.json()["error"]["code"]) if r.status_code >= 400 else ""
    except (ValueError, KeyError, TypeError):
        return "(no error body)"


@dataclass
class Paid:
    deposit_id: str
    owner: str
    cents: int
    intent: dict[str, Any]


class PaymentsLoad:
    def __init__(self, port: int, books: Books, rng: random.Random, events: list[str], log: Callable[[str], None]):
        self.port = port
        self.fake = FakeStripe()
        self.books = books
        self.rng = rng
        self.events = events
        self.log = log
        self.payloads: list[str] = []  # every webhook event sent so far: replayed after kills and at the end
        self.paid: list[Paid] = []
        self.hooks: Counter[str] = Counter()  # webhook answers by status and error code ("error" = no answer)
        self.abandoned: list[str] = []
        self._stop: fake_stripe.Stop | None = None
        self._pending: set[asyncio.Future[None]] = set()  # late webhook copies still being delivered
        self.in_flight = 0  # webhook requests sent and not yet answered
        self.in_flight_at_kills: list[int] = []

    def billing_env(self) -> dict[str, str]:
        return {
            "PAYMENT_MODE": "stripe", "STRIPE_SECRET_KEY": fake_stripe.SECRET_KEY,
            "STRIPE_WEBHOOK_SECRET": fake_stripe.WEBHOOK_SECRET, "STRIPE_API_BASE": f"http://127.0.0.1:{self.port}",
            "PUBLIC_URL": fake_stripe.PUBLIC_URL,
        }  # fmt: skip

    async def start(self) -> None:
        self._stop = await fake_stripe.serve(self.fake, self.port)

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()

    # --- what Stripe and a paying owner do ---

    async def deliver(self, http: httpx.AsyncClient, payload: str) -> None:
        """Stripe's delivery of one event: retried until a 2xx (without its hours-long back-off), signed anew
        each time as Stripe does."""
        for attempt in range(600):
            headers = {"Stripe-Signature": fake_stripe.sign(payload), "Content-Type": "application/json"}
            self.in_flight += 1
            try:
                r = await http.post(WEBHOOK, content=payload, headers=headers)
                self.hooks[f"{r.status_code} {_code(r)}".strip()] += 1
                if r.status_code == 200:
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"webhook refused: {r.status_code} {r.text}")
            except httpx.HTTPError:
                self.hooks["error"] += 1
            finally:
                self.in_flight -= 1
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        raise RuntimeError("a webhook was never accepted")

    async def deliver_all(self, http: httpx.AsyncClient, payloads: list[str], limit: int = 16) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(payload: str) -> None:
            async with gate:
                await self.deliver(http, payload)

        await asyncio.gather(*(one(p) for p in payloads))

    def _sent(self, event_type: str, obj: dict[str, Any]) -> str:
        payload = fake_stripe.event(event_type, obj)
        self.payloads.append(payload)
        return payload

    async def checkout(self, http: httpx.AsyncClient, auth: dict[str, str], cents: int, replay: bool = False) -> str:
        """Open a Checkout deposit, asking again with the same key until answered 201 (a retry after a lost
        answer is the same deposit); returns the Checkout Session id."""
        headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(120):
            try:
                r = await http.post("/api/balance/deposit", json={"amount_cents": cents}, headers=headers)
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 201:
                deposit = r.json()["deposit"]
                if replay:  # asked again on purpose: the same deposit and Checkout page, not a second one
                    again = await http.post("/api/balance/deposit", json={"amount_cents": cents}, headers=headers)
                    same = again.status_code == 201 and again.json()["deposit"]["id"] == deposit["id"]
                    self.events.append(f"deposit replay → {again.status_code} same deposit={same}")
                return str(deposit["checkout_url"]).rsplit("/", 1)[1]
            if r is not None and r.status_code < 500:
                raise RuntimeError(f"deposit refused: {r.status_code} {r.text}")
            await asyncio.sleep(min(0.25 * (attempt + 1), 2.0))
        raise RuntimeError("deposit never opened")

    async def pay(self, http: httpx.AsyncClient, owner: str, auth: dict[str, str], cents: int, copies: int = 1,
                  replay: bool = False) -> Paid:  # fmt: skip
        """A deposit paid on Checkout, confirmed by Stripe's events (each `copies` times at once, in random order,
        one more copy a little later); returns once the events were accepted, i.e. the credit committed."""
        session_id = await self.checkout(http, auth, cents, replay)
        session, intent = self.fake.pay(session_id)
        paid = Paid(session["client_reference_id"], owner, cents, intent)
        self.books.deposits.setdefault(owner, {})[paid.deposit_id] = cents
        events = [self._sent("checkout.session.completed", session), self._sent("payment_intent.succeeded", intent)]
        batch = [p for p in events for _ in range(copies)]
        self.rng.shuffle(batch)
        await self.deliver_all(http, batch)
        self.paid.append(paid)
        if copies > 1:  # one more copy of each, a little later (awaited by `settle`)
            self._pending.add(asyncio.ensure_future(self._later(http, events, self.rng.uniform(0.5, 3.0))))
        return paid

    async def _later(self, http: httpx.AsyncClient, payloads: list[str], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.deliver_all(http, payloads)

    async def abandon(self, http: httpx.AsyncClient, auth: dict[str, str], cents: int) -> None:
        """A Checkout page left unpaid: Stripe expires the session; nothing may be credited."""
        session_id = await self.checkout(http, auth, cents)
        session = {k: v for k, v in self.fake.sessions[session_id].items() if not k.startswith("_")}
        session["status"] = "expired"
        self.abandoned.append(str(session["client_reference_id"]))
        await self.deliver_all(http, [self._sent("checkout.session.expired", session)] * 2)

    async def take_back(self, http: httpx.AsyncClient, kind: str) -> str:
        """A refund (partial, then more of it: `amount_refunded` is cumulative) or a dispute of a paid deposit,
        each event sent twice at once (a refund level also under a second event id), then again out of order."""
        if not self.paid:
            return f"{kind}: no paid deposit yet"
        paid = self.rng.choice(self.paid)
        intent, cents = paid.intent, paid.cents
        if kind == "dispute" or intent["id"] in self.fake.refunded:
            dispute = self.fake.dispute(intent, max(1, cents * 3 // 10))
            await self.deliver_all(http, [self._sent("charge.dispute.created", dispute)] * 2)
            return f"dispute of {dispute['amount']} on {paid.deposit_id}"
        first = self._sent("charge.refunded", self.fake.charge(intent, cents // 5))
        resent = self._sent("charge.refunded", self.fake.charge(intent, cents // 5))  # same level, new event id
        more = self._sent("charge.refunded", self.fake.charge(intent, cents * 2 // 5))
        await self.deliver_all(http, [first, first, resent, more, more])
        await self.deliver_all(http, [more, first])  # late and out of order: each cent is taken back once
        return f"refund of {cents * 2 // 5} on {paid.deposit_id}"

    # --- the load, alongside the runs ---

    async def load(self, http: httpx.AsyncClient, owners: list[tuple[str, dict[str, str]]], deposits: int,
                   reversals: int, runs: int, answered: Callable[[], int],
                   progress: asyncio.Event) -> None:  # fmt: skip
        """`deposits` Checkout deposits (about one in eight abandoned) and `reversals` refunds/disputes, each at a
        random point of the run load (counted in answered requests), overlapping one another."""
        plan = [("deposit", self.rng.uniform(0.03, 0.9)) for _ in range(deposits)]
        plan += [("refund" if i % 2 == 0 else "dispute", self.rng.uniform(0.5, 0.95)) for i in range(reversals)]
        plan.sort(key=lambda p: p[1])
        tasks: list[asyncio.Task[Any]] = []
        for action, at in plan:
            while answered() < at * runs:
                progress.clear()
                await progress.wait()
            owner, auth = self.rng.choice(owners)
            cents = self.rng.choice((500, 700, 1000, 1500, 2500))
            if action != "deposit":
                tasks.append(asyncio.create_task(self._logged(self.take_back(http, action))))
            elif self.rng.random() < 0.125:
                tasks.append(asyncio.create_task(self.abandon(http, auth, cents)))
            else:
                tasks.append(asyncio.create_task(self.pay(http, owner, auth, cents, copies=self.rng.randint(2, 4))))
        await asyncio.gather(*tasks)

    async def _logged(self, what: Any) -> None:
        started = time.monotonic()
        said = await what
        self.events.append(f"        {said} (took {time.monotonic() - started:.1f}s)")

    async def replay_everything(self, http: httpx.AsyncClient) -> int:
        """Every event sent so far, once more (Stripe redelivers; what a kill interrupted is retried)."""
        payloads = list(self.payloads)
        await self.deliver_all(http, payloads)
        return len(payloads)

    async def across_kill(self, http: httpx.AsyncClient, owner: tuple[str, dict[str, str]],
                          kill: Callable[[], Awaitable[None]]) -> str:  # fmt: skip
        """`kill` lands while webhooks are being handled: every event so far is sent again and a new deposit is
        paid (its events three times each), and the kill waits until requests are in flight."""
        answered = sum(self.hooks.values())
        burst = asyncio.gather(self.replay_everything(http), self.pay(http, *owner, 1000, copies=3))
        # Polled, not awaited on an event: the point is to catch a moment with requests in flight.
        while not burst.done() and (self.in_flight == 0 or sum(self.hooks.values()) < answered + 4):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        in_flight = self.in_flight
        self.in_flight_at_kills.append(in_flight)
        await kill()
        replayed, _ = await burst
        return f"        {replayed} webhook events replayed, a deposit paid across the kill ({in_flight} in flight)"

    async def settle(self, http: httpx.AsyncClient) -> None:
        """After the load: the late copies are delivered, every event once more, and the books are told what
        Stripe saw."""
        while self._pending:
            await asyncio.gather(*list(self._pending))
            self._pending = {f for f in self._pending if not f.done()}
        n = await self.replay_everything(http)
        self.events.append(f"        all {n} webhook events replayed after the load")
        self.books.stripe_paid = self.fake.paid_deposits()
        self.books.stripe_taken_back = self.fake.taken_back()
        self.books.abandoned = list(self.abandoned)
