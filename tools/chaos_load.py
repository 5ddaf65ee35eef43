"""The traffic of `make chaos` (tools/chaos.py): owners with priced, free and async `mock` endpoints, funded
through Stripe Checkout, and the requests sent through the gateway over HTTP, each answer tallied.

What a request is (`MIX`) is drawn from the run's seed and its number, so `--seed N` replays the same requests;
every answer is written down (`Tally`) for the checks of chaos_checks.py.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentry_dev.stack import dev_token

from .chaos_checks import Books, Expectation
from .chaos_payments import PaymentsLoad

# What each request is, and how often: (kind, weight). `*_fail` inputs make the mock model fail the run.
MIX = (("sync", 40), ("async", 33), ("sync_fail", 5), ("async_fail", 5), ("free", 9), ("test", 8))
FAIL_INPUT = {"mock": {"fail": "llm_provider_error"}}


@dataclass
class Owner:
    user: str
    auth: dict[str, str]
    price: int
    funded: bool
    endpoints: dict[str, dict[str, str]] = field(default_factory=dict)  # kind → id, slug, key


@dataclass
class Tally:
    answers: dict[str, Expectation] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0


@dataclass
class Load:
    """`runs` requests from `owner_count` owners, at most `rate` per second over `concurrency` connections. `rng`
    is the run's seeded generator, shared with the chaos schedule (prices are drawn from it before the schedule)."""

    runs: int
    owner_count: int
    rate: float
    concurrency: int
    seed: int | None
    rng: random.Random
    books: Books
    payments: PaymentsLoad
    log: Callable[[str], None]
    owners: list[Owner] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a request is answered

    # --- owners, endpoints, money ---

    async def provision(self, http: httpx.AsyncClient) -> None:
        per_owner = self.runs / self.owner_count
        for i in range(self.owner_count):
            user = f"chaos-{i}-{uuid.uuid4().hex[:8]}"
            funded = i % 2 == 0
            # Underfunded owners pay more per run than a minimum deposit covers for long.
            price = self.rng.randint(1, 9) if funded else self.rng.randint(20, 40)
            owner = Owner(user, {"Authorization": f"Bearer {dev_token(user)}"}, price, funded)
            r = await http.post("/api/workspaces", json={"name": f"chaos {i}"}, headers=owner.auth)
            r.raise_for_status()
            ws = r.json()["workspace"]["id"]
            for kind, price_cents, async_mode in (("sync", price, False), ("async", price, True), ("free", 0, False)):
                body = {
                    "name": f"{kind} {user}", "workspace_id": ws, "system_prompt": "Answer briefly.",
                    "llm_provider": "mock", "price_per_run_cents": price_cents, "async_mode": async_mode,
                    "timeout_ms": 10000,
                }  # fmt: skip
                r = await http.post("/api/agent-endpoints", json=body, headers=owner.auth)
                r.raise_for_status()
                created = r.json()
                owner.endpoints[kind] = {
                    "id": created["endpoint"]["id"], "slug": created["endpoint"]["slug"], "key": created["api_key"]
                }  # fmt: skip
            self.owners.append(owner)
            self.books.prices[user] = price
            self.books.deposits[user] = {}
            need = int(per_owner * price * 1.5) if funded else 500
            while need > 0:  # a Stripe Checkout deposit, paid, its webhooks delivered (and credited) before the load
                await self.payments.pay(http, user, owner.auth, min(max(need, 500), 50000))
                need -= 50000

    def payers(self) -> list[tuple[str, dict[str, str]]]:
        """Who the payments load tops up: everyone but the last underfunded owner (of two or more), whose charges
        must stay uncollected."""
        poor = [o for o in self.owners if not o.funded]
        keep_poor = poor[-1] if len(poor) >= 2 else None
        return [(o.user, o.auth) for o in self.owners if o is not keep_poor]

    def pick(self, i: int) -> tuple[str, Owner, Any]:
        """The i-th request: its kind, owner and input. Half the runs take a while, so a kill catches some."""
        rng = random.Random(f"{self.seed}-{i}")
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        owner = rng.choice(self.owners)
        if kind.endswith("_fail"):
            return kind, owner, FAIL_INPUT
        if rng.random() < 0.5:
            return kind, owner, {"mock": {"delay_ms": rng.randint(50, 600)}, "n": i}
        return kind, owner, f"chaos run {i}"

    async def request(self, http: httpx.AsyncClient, kind: str, owner: Owner, payload: Any) -> httpx.Response:
        if kind == "test":
            ep = owner.endpoints["sync"]
            return await http.post(f"/api/agent-endpoints/{ep['id']}/test", json={"input": payload},
                                   headers=owner.auth)  # fmt: skip
        ep = owner.endpoints[kind.removesuffix("_fail")]
        return await http.post(f"/api/run/{ep['slug']}", json={"input": payload}, headers={"X-API-Key": ep["key"]})

    async def drive(self, http: httpx.AsyncClient, t0: float, chaos: asyncio.Task[None]) -> None:
        """At least `runs` requests, at most `rate` per second, and on until every chaos event has happened."""
        counter = iter(range(sys.maxsize))

        async def worker() -> None:
            for i in counter:
                if i >= self.runs and chaos.done():
                    return
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.one(http, *self.pick(i))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def one(self, http: httpx.AsyncClient, kind: str, owner: Owner, payload: Any) -> None:
        t = self.tally
        try:
            r = await self.request(http, kind, owner, payload)
        except httpx.HTTPError as err:
            # No answer: whether the run was accepted is unknown to the caller, so it is not counted as accepted.
            t.errors[f"{kind} {type(err).__name__}"] += 1
            if sum(t.errors.values()) <= 5:
                self.log(f"chaos: {kind} request to {err.request.url.path} failed without an answer: {err!r}")
            return
        finally:
            t.done += 1
            self.progress.set()
        t.statuses[f"{kind} {r.status_code}"] += 1
        run_id = r.headers.get("x-run-id")
        if run_id is None and r.status_code in (200, 202):
            run_id = r.json().get("run_id")
        if run_id:
            kind_of = "async" if kind.startswith("async") else "sync"
            t.answers[run_id] = Expectation(kind_of, owner.user, r.status_code, r.status_code in (200, 202))

    # --- after ---

    def refused(self) -> int:
        """Requests not accepted for any reason but the failure they asked for (429, 503, 5xx, no answer)."""
        asked = {"sync_fail 502"}
        answered = sum(n for key, n in self.tally.statuses.items() if key.split()[1] not in ("200", "202"))
        return answered - sum(self.tally.statuses[k] for k in asked) + sum(self.tally.errors.values())

    async def history_missing(self, http: httpx.AsyncClient) -> tuple[int, int]:
        """Accepted runs absent from their endpoint's history, and billable runs whose charge reads `pending`."""
        seen: set[str] = set()
        pending = 0
        for owner in self.owners:
            for ep in owner.endpoints.values():
                cursor: str | None = None
                while True:
                    params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                    r = await http.get(f"/api/agent-endpoints/{ep['id']}/runs", params=params, headers=owner.auth)
                    r.raise_for_status()
                    page = r.json()
                    seen.update(run["id"] for run in page["runs"])
                    pending += sum(1 for run in page["runs"] if run["charge"]["status"] == "pending")
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
        accepted = [run_id for run_id, a in self.tally.answers.items() if a.accepted]
        return sum(1 for run_id in accepted if run_id not in seen), pending
