"""`make chaos`: the money path while processes crash — then the invariants of ARCHITECTURE.md §5, checked.

Starts a stack of its own (nats-server and PostgreSQL in a temporary folder; keys, gateway, two runners, two
billing processes) and drives runs through the gateway over HTTP on priced `mock` endpoints (tools/chaos_load.py)
— synchronous and `async_mode`, some made to fail, some free, some owner test runs — for several owners, some
underfunded so charges go uncollected and are settled by top-ups later. Meanwhile, at random moments: kill -9 a
runner and a billing process (then restart it), restart NATS (kill -9) and PostgreSQL (immediate shutdown = crash).
Billing runs in `stripe` payment mode against a fake Stripe on loopback (tools/fake_stripe.py): every deposit
is a Checkout payment credited by Stripe's signed webhook, and a payments load (tools/chaos_payments.py) goes on
alongside the runs — webhooks replayed, duplicated, out of order, in flight when billing is killed, plus
abandoned checkouts, refunds and disputes.

A 200/202 answer is "accepted"; 429/503/5xx are refusals. After the load it waits for quiescence and checks,
in PostgreSQL: every accepted run has one terminal record and is in its endpoint's history; every succeeded,
priced, non-test run has exactly one charge and nothing else has any; no money moved twice; Σ ledger = balance
for every wallet, never negative; every deposit Stripe saw paid credited exactly once (deposit row, credit and
ledger entry), nothing unpaid credited, refunds/disputes taken back as Stripe says; `reconcile` agrees.
The last line printed is one JSON object (`accepted`, `lost`, `double_charges`, `ledger_drift_cents`, …);
the exit code is 1 on any violation.

    python -m tools.chaos --runs 3000 --concurrency 32          # make chaos
    python -m tools.chaos --runs 300 --no-nats --no-pg --seed 7  # smaller, reproducible
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentry_dev.stack import Service, Stack, free_port

from . import chaos_checks
from .chaos_checks import Books, summarize
from .chaos_load import Load
from .chaos_payments import PaymentsLoad

__all__ = ["Config", "run_chaos", "summarize"]

# Rate limits would dominate a load test; raise them (a short window keeps the limiter's memory streams small).
GATEWAY_ENV = {
    "RATE_LIMIT_PER_ENDPOINT": "1000000",
    "RATE_LIMIT_PER_CLIENT_IP": "1000000",
    "RATE_LIMIT_TEST_RUNS": "1000000",
    "RATE_LIMIT_WINDOW_S": "5",
}
# Shorter ack waits bring a killed process's work back sooner; the semantics are the same as in production.
RUNNER_ENV = {"RUNNER_ACK_WAIT_S": "5", "RUNNER_SHUTDOWN_GRACE_S": "2"}
BILLING_ENV = {"CHARGE_ACK_WAIT_S": "5", "CHARGE_RETRY_DELAY_S": "0.5"}


@dataclass
class Config:
    runs: int = 3000
    concurrency: int = 32
    rate: float = 80.0
    owners: int = 6
    runner_kills: int = 3
    billing_kills: int = 3
    deposits: int | None = None  # Checkout deposits of the payments load (default: one per 20 runs, at least 10)
    reversals: int = 4  # refunds and disputes among them
    restart_nats: bool = True
    restart_pg: bool = True
    outage_s: float | None = None  # how long NATS / PostgreSQL stay down (default: 0.5-1.5 s at random)
    seed: int | None = None
    quiesce_timeout_s: float = 180.0
    data_dir: Path | None = None
    keep: bool = False
    echo: bool = False
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


class Chaos:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.log = cfg.log
        data = cfg.data_dir or Path(tempfile.mkdtemp(prefix="agentry-chaos-"))
        self.stack = Stack(
            data, nats_port=free_port(), pg_port=free_port(), fast_pg=True, echo=cfg.echo,
            extra_env={"ENVIRONMENT": "test", "ALLOW_PRIVATE_URLS": "true"},
        )  # fmt: skip
        self.runners: list[Service] = []
        self.billers: list[Service] = []
        self.gateway: Service | None = None
        self.books = Books()
        self.events: list[str] = []
        self.stripe_http: httpx.AsyncClient  # set while the load runs
        # Its own random stream: the payments load draws concurrently with the chaos schedule.
        payments_rng = random.Random(f"{cfg.seed}-payments")
        self.payments = PaymentsLoad(free_port(), self.books, payments_rng, self.events, self.log)
        self.load = Load(
            cfg.runs, cfg.owners, cfg.rate, cfg.concurrency, cfg.seed, self.rng, self.books, self.payments, self.log
        )

    # --- the system ---

    def start(self) -> None:
        s = self.stack
        s.start_servers()
        s.migrate()
        keys = s.start_service("keys", wait=False)
        env = {**BILLING_ENV, **self.payments.billing_env()}
        self.billers = [s.start_service("billing", wait=False, **env) for _ in range(2)]
        self.runners = [s.start_service("runner", wait=False, **RUNNER_ENV) for _ in range(2)]
        self.gateway = s.start_service("gateway", wait=False, **GATEWAY_ENV)
        for svc in (keys, *self.billers, *self.runners, self.gateway):
            svc.wait_ready()

    def stop(self, failed: bool) -> None:
        self.stack.stop()
        if failed or self.cfg.keep:
            self.log(f"chaos: data and service logs kept in {self.stack.data_dir}")
        else:
            shutil.rmtree(self.stack.data_dir, ignore_errors=True)

    # --- chaos ---

    def schedule(self) -> list[tuple[int, str]]:
        """Each action at a random point of the load, counted in answered requests (a slow machine stays fair)."""
        actions = ["runner"] * self.cfg.runner_kills + ["billing"] * self.cfg.billing_kills
        actions += ["nats"] * self.cfg.restart_nats + ["postgres"] * self.cfg.restart_pg
        # Top-ups settle uncollected charges while everything else is going on (one is replayed on purpose).
        actions += ["topup", "topup-replay"]
        self.rng.shuffle(actions)
        moments = sorted(int(self.rng.uniform(0.08, 0.85) * self.cfg.runs) for _ in actions)
        return list(zip(moments, actions, strict=True))

    @staticmethod
    async def both(*work: Any) -> None:
        await asyncio.gather(*work)

    async def unleash(self, http: httpx.AsyncClient, t0: float) -> None:
        for at, action in self.schedule():
            while self.load.tally.done < at:
                self.load.progress.clear()
                await self.load.progress.wait()
            started = time.monotonic()
            await self.act(http, action)
            self.events.append(f"{started - t0:6.1f}s {action} (took {time.monotonic() - started:.1f}s)")
            self.log(f"chaos: {self.events[-1]}  [{self.load.tally.done} requests answered]")

    async def act(self, http: httpx.AsyncClient, action: str) -> None:
        """One blow. A killed service is started again at once but not waited for: importing a service takes
        seconds on a busy machine, and the system must cope meanwhile (`ready` waits for everything later)."""
        s = self.stack
        if action in ("runner", "billing"):
            svc = self.rng.choice(self.runners if action == "runner" else self.billers)
            pause = self.rng.uniform(0.2, 1.0)

            async def kill() -> None:
                await asyncio.to_thread(svc.stop, True)
                await asyncio.sleep(pause)
                svc.start()

            if action == "runner":
                await kill()
            else:  # billing dies while Stripe's webhooks are being handled
                payer = self.rng.choice(self.load.payers())
                self.events.append(await self.payments.across_kill(self.stripe_http, payer, kill))
        elif action == "nats":
            assert s.nats is not None
            await asyncio.to_thread(s.nats.stop, True)
            await asyncio.sleep(self.outage())
            await asyncio.to_thread(s.nats.start)
        elif action == "postgres":
            assert s.postgres is not None
            await asyncio.to_thread(s.postgres.stop, "immediate")  # a crash: recovery from the WAL on start
            await asyncio.sleep(self.outage())
            await asyncio.to_thread(s.postgres.start)
        else:
            # The last underfunded owner (of two or more) is never topped up: some charges stay uncollected.
            poor = [o for o in self.load.owners if not o.funded]
            if poor:
                owner = poor[1] if action == "topup-replay" and len(poor) > 2 else poor[0]
                await self.payments.pay(
                    self.stripe_http, owner.user, owner.auth, 500, copies=2, replay=action == "topup-replay"
                )

    def outage(self) -> float:
        return self.cfg.outage_s if self.cfg.outage_s is not None else self.rng.uniform(0.5, 1.5)

    def ready(self) -> None:
        for svc in self.stack.services:
            svc.wait_ready(timeout=180)

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        assert self.gateway is not None
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so no request races a closing socket.
        limits = httpx.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency + 8,
                              keepalive_expiry=2.0)  # fmt: skip
        await self.payments.start()
        try:
            return await self._run(limits)
        finally:
            await self.payments.stop()

    async def _run(self, limits: httpx.Limits) -> dict[str, Any]:
        cfg = self.cfg
        assert self.gateway is not None
        async with (
            httpx.AsyncClient(base_url=self.gateway.url, timeout=60, limits=limits) as http,
            # Stripe's deliveries on connections of their own: a burst of webhooks never holds up the runs.
            httpx.AsyncClient(base_url=self.gateway.url, timeout=60, limits=limits) as self.stripe_http,
        ):
            await self.load.provision(http)
            self.log(f"chaos: {cfg.runs} requests at ≤{cfg.rate:g}/s, concurrency {cfg.concurrency}, "
                     f"{len(self.load.owners)} owners, seed {cfg.seed}")  # fmt: skip
            t0 = time.monotonic()
            deposits = cfg.deposits if cfg.deposits is not None else max(10, cfg.runs // 20)
            payments = self.payments.load(self.stripe_http, self.load.payers(), deposits, cfg.reversals, cfg.runs,
                                          lambda: self.load.tally.done, self.load.progress)  # fmt: skip
            chaos = asyncio.create_task(self.both(self.unleash(http, t0), payments))
            await self.load.drive(http, t0, chaos)
            await chaos  # done already: it is what ended the load
            load_s = time.monotonic() - t0
            await asyncio.to_thread(self.ready)
            await self.payments.settle(self.stripe_http)
            accepted = [run_id for run_id, a in self.load.tally.answers.items() if a.accepted]
            self.log(f"chaos: load done in {load_s:.1f}s; {len(accepted)} accepted; waiting for quiescence")
            waited = await chaos_checks.wait_for_quiescence(
                self.stack.nats_url, self.stack.database_url, accepted, cfg.quiesce_timeout_s
            )
            result = await chaos_checks.check(self.stack.database_url, self.load.tally.answers, self.books)
            result["history_missing"], result["history_pending_charges"] = await self.load.history_missing(http)
        result["reconcile_exit"], result["reconcile"] = chaos_checks.reconcile(self.stack.database_url)
        result["unhandled_errors"] = chaos_checks.unhandled_errors(self.stack.data_dir / "logs")
        result.update(
            requests=self.load.tally.done,
            refused=self.load.refused(),
            responses=dict(sorted(self.load.tally.statuses.items())),
            client_errors=dict(self.load.tally.errors),
            chaos=self.events,
            webhook_answers=dict(sorted(self.payments.hooks.items())),
            webhook_events=len(self.payments.payloads),
            webhooks_in_flight_at_billing_kills=self.payments.in_flight_at_kills,
            stripe_errors=self.payments.fake.errors,
            load_s=round(load_s, 1),
            quiescent_after_s=round(waited, 1),
            seed=cfg.seed,
        )
        return result


def run_chaos(cfg: Config) -> dict[str, Any]:
    chaos = Chaos(cfg)
    failed = True
    try:
        chaos.start()
        result = asyncio.run(chaos.run())
        result["violations"] = chaos_checks.violations(result)
        failed = bool(result["violations"])
        return result
    finally:
        chaos.stop(failed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chaos", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3000, help="requests to send")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=float, default=80.0, help="requests started per second, at most")
    p.add_argument("--owners", type=int, default=6)
    p.add_argument("--runner-kills", type=int, default=3)
    p.add_argument("--billing-kills", type=int, default=3)
    p.add_argument("--no-nats", action="store_true", help="skip the NATS restart")
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL restart")
    p.add_argument("--outage-s", type=float, default=None, help="NATS/PostgreSQL downtime (default 0.5-1.5 s)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the data folder and service logs")
    p.add_argument("--echo", action="store_true", help="echo service logs")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1_000_000)
    cfg = Config(
        runs=a.runs, concurrency=a.concurrency, rate=a.rate, owners=a.owners, runner_kills=a.runner_kills,
        billing_kills=a.billing_kills, restart_nats=not a.no_nats, restart_pg=not a.no_pg, outage_s=a.outage_s,
        seed=seed, keep=a.keep, echo=a.echo,
    )  # fmt: skip
    result = run_chaos(cfg)
    print(summarize(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
