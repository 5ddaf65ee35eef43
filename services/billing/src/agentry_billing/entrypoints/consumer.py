"""The charge consumer: `run.completed` and `run.failed` from a durable JetStream pull consumer, in batches.

For each batch: one transaction charges every billable run (idempotent per run) and counts every run in the
usage projection (idempotent per run, `usage.py`), then the outcome events (and low-balance crossings) are
published, then — only then — the batch is acknowledged. A crash at any point leaves the events
unacknowledged; their redelivery finds the charges already made and publishes the same outcomes again.
While one batch's outcomes are being stored by JetStream, the next batch is already being charged.

It is a hand-written loop rather than a FastStream batch subscriber because the guarantees live in the
acknowledgements: an unreadable event is terminated alone, one that fails to charge is redelivered alone
after a delay, and nothing is acknowledged before its outcome is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError
from psycopg import errors as pg_errors
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentry_common import asyncapi, subjects
from agentry_common.events import BalanceLow, ChargeCollected, ChargeUncollected, Event, RunCompleted, RunFailed

from .. import metrics, service, spend, usage
from ..domain import ChargeOutcome, ChargeRun, UnbillableEvent
from ..payments_repository import Recharge
from ..repository import BillingRepository
from ..settings import Settings
from ..spend_repository import SpendRepository
from ..usage_repository import UsageRepository
from .jetstream import BatchPublisher, BatchPuller
from .traces import Carrier, charge_spans

log = logging.getLogger(__name__)

STREAM = subjects.RUN_EVENTS_STREAM.name
_RETRYABLE_SQL = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)
ATTEMPTS = 5
PUBLISH_TIMEOUT_S = 30.0

asyncapi.consumes(
    subjects.RUN_COMPLETED, RunCompleted, by="billing", stream=subjects.RUN_EVENTS_STREAM,
    durable=subjects.BILLING_CONSUMER,
    description="Billing charges each succeeded, priced, non-test run once, in batches; an event is "
    "acknowledged once its charge is committed and its outcome stored.",
)  # fmt: skip
asyncapi.consumes(
    subjects.RUN_FAILED, RunFailed, by="billing", stream=subjects.RUN_EVENTS_STREAM,
    durable=subjects.BILLING_CONSUMER,
    description="Billing counts each failed run once in the owner's usage (never charged) and releases its "
    "spend-cap hold, in one transaction.",
)  # fmt: skip
asyncapi.publishes(
    subjects.BALANCE_LOW, BalanceLow, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="A charge took the owner's balance below their low-balance threshold; once per crossing "
    "(`Nats-Msg-Id` names the owner and the crossing number).",
)  # fmt: skip
asyncapi.publishes(
    subjects.CHARGE_COLLECTED, ChargeCollected, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="A run's price was debited from its owner's wallet, at once or, for a charge announced "
    "uncollected before, when a later credit settled it (same `charge_id`).",
)  # fmt: skip
asyncapi.publishes(
    subjects.CHARGE_UNCOLLECTED, ChargeUncollected, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="The owner's wallet could not cover the run's price: the charge is recorded and the wallet "
    "untouched; it is settled oldest-first when the wallet is next credited.",
)  # fmt: skip


def _retryable(err: Exception) -> bool:
    if isinstance(err, service.ChargeConflict):
        return True
    return isinstance(err, DBAPIError) and isinstance(err.orig, _RETRYABLE_SQL)


def outcome_subject(outcome: ChargeOutcome) -> str:
    return subjects.CHARGE_COLLECTED if outcome.collected else subjects.CHARGE_UNCOLLECTED


async def publish_outcomes(
    publisher: BatchPublisher,
    outcomes: Sequence[ChargeOutcome],
    traces: Mapping[str, Carrier] | None = None,
    extra: Sequence[Event] = (),
) -> None:
    """Publish outcome events (carrying their run's trace, by run_id), then `extra` events (low-balance
    crossings, deposits), and wait until JetStream stored them all."""
    messages = []
    for outcome in outcomes:
        event = outcome.event()
        if traces:
            event.trace = traces.get(outcome.run_id, {})
        messages.append((outcome_subject(outcome), event.model_dump_json().encode(), event.msg_id()))
    messages += [(event.type, event.model_dump_json().encode(), event.msg_id()) for event in extra]
    await publisher.publish(messages, timeout=PUBLISH_TIMEOUT_S)


class ChargeConsumer:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        publisher: BatchPublisher,
        on_recharges: Callable[[Sequence[Recharge]], None] | None = None,
    ):
        self.settings = settings
        self.on_recharges = on_recharges  # auto-recharges a committed batch started (payments)
        self.sessions = sessions
        self.publisher = publisher
        self._stopping = asyncio.Event()
        self._inflight = asyncio.Semaphore(settings.charge_inflight_batches)
        self._finishing: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._js: JetStreamContext | None = None
        self._puller: BatchPuller | None = None

    @property
    def config(self) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            durable_name=s.charge_consumer,
            description="billing: charges each succeeded priced run once, counts every ended run once",
            filter_subjects=[subjects.RUN_COMPLETED, subjects.RUN_FAILED],
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.charge_ack_wait_s,
            max_deliver=-1,  # money is never dropped after N tries; failures are retried with a delay
            max_ack_pending=max(10_000, s.charge_batch_size * (s.charge_inflight_batches + 2) * 4),
        )

    async def start(self, nc: Client) -> None:
        self._js = nc.jetstream()
        try:
            await self._js.add_consumer(STREAM, self.config)  # create or update: every replica may do it
        except APIError as err:
            # A durable set up by an operator with settings that cannot be updated in place: use it as it is.
            await self._js.consumer_info(STREAM, self.settings.charge_consumer)
            log.warning("using the existing consumer as configured: %s", err.description)
        self._puller = BatchPuller(nc, STREAM, self.settings.charge_consumer)
        await self._puller.start()
        self._tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._sample_lag())]
        log.info("charging run.completed", extra={"consumer": self.settings.charge_consumer})

    async def stop(self) -> None:
        """Finish the batch at hand and publish its outcomes; nothing fetched is left unacknowledged."""
        self._stopping.set()
        consume, sample = self._tasks or (None, None)
        if sample is not None:
            sample.cancel()
        if consume is not None:
            await asyncio.gather(consume, return_exceptions=True)
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        if sample is not None:
            await asyncio.gather(sample, return_exceptions=True)
        if self._puller is not None:
            for msg in await self._puller.stop():  # delivered after the last batch: another replica takes them
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def _consume(self) -> None:
        assert self._puller is not None
        while not self._stopping.is_set():
            try:
                msgs = await self._puller.fetch(self.settings.charge_batch_size, self.settings.charge_fetch_wait_s)
            except Exception as err:
                log.warning("cannot fetch run.completed: %s", type(err).__name__)
                await asyncio.sleep(1)
                continue
            if not msgs:
                continue
            try:
                await self.handle(msgs)
            except Exception:
                # Unacknowledged messages come back after ack_wait; nothing is lost, only delayed.
                log.exception("charging a batch failed unexpectedly")
                await asyncio.sleep(1)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        started, started_ns = time.monotonic(), time.time_ns()
        items: list[tuple[Msg, ChargeRun | None, usage.UsageRun]] = []
        traces: dict[str, Carrier] = {}  # run_id → the trace its run.completed carries on
        for msg in msgs:
            try:
                event: RunCompleted | RunFailed
                if msg.subject == subjects.RUN_FAILED:
                    event = RunFailed.model_validate_json(msg.data)
                    run = None
                else:
                    event = RunCompleted.model_validate_json(msg.data)
                    run = ChargeRun.from_event(event)
                counted = usage.UsageRun.from_event(event)
            except (ValidationError, UnbillableEvent) as err:
                metrics.SKIPPED.labels("invalid").inc()
                log.error(
                    "run event cannot be charged or counted and is dropped",
                    extra={"stream_seq": msg.metadata.sequence.stream, "reason": str(err)[:300]},
                )
                await msg.term()
                continue
            if run is None and isinstance(event, RunCompleted):
                metrics.SKIPPED.labels("test" if event.is_test else "free").inc()
            elif run is not None and event.trace:
                traces[run.run_id] = event.trace
            items.append((msg, run, counted))

        outcomes: list[ChargeOutcome] = []
        alerts: list[BalanceLow] = []
        failed: list[Msg] = []
        to_ack: list[Msg] = []  # charged and counted: acknowledged once the outcomes are stored
        if items:
            try:
                outcomes, alerts = await self._charge(
                    [run for _, run, _ in items if run is not None], [c for _, _, c in items]
                )
                to_ack += [msg for msg, _, _ in items]
            except Exception:
                metrics.BATCH_FAILURES.labels("batch").inc()
                log.exception("a batch of %d could not be charged; charging its events one by one", len(items))
                for msg, run, counted in items:
                    try:
                        done, fired = await self._charge([run] if run is not None else [], [counted])
                        outcomes += done
                        alerts += fired
                        to_ack.append(msg)
                    except Exception:
                        metrics.BATCH_FAILURES.labels("single").inc()
                        log.exception("run event could not be charged; redelivering later",
                                      extra={"run_id": counted.run_id})  # fmt: skip
                        failed.append(msg)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        metrics.BATCH_EVENTS.observe(len(msgs))
        for msg in failed:
            await msg.nak(delay=self.settings.charge_retry_delay_s)
        carried = charge_spans(outcomes, traces, started_ns)
        await self._inflight.acquire()
        task = asyncio.create_task(self._finish(outcomes, alerts, to_ack, carried))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _charge(
        self, runs: list[ChargeRun], counted: list[usage.UsageRun]
    ) -> tuple[list[ChargeOutcome], list[BalanceLow]]:
        """Charge the billable runs and count every run, in one transaction; the outcomes and the low-balance
        crossings it caused."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.sessions() as session, session.begin():
                    batch = await service.charge_runs(
                        BillingRepository(session), runs, auto_recharge=self.on_recharges is not None
                    )
                    # A capped key's hold on these runs' prices becomes spent, with the charges or not at all.
                    holds = SpendRepository(session)
                    await spend.end_holds(holds, [run.run_id for run in runs], "settled")
                    # A failed run's hold goes back (ending a hold that does not exist changes nothing).
                    await spend.end_holds(holds, [c.run_id for c in counted if not c.succeeded], "released")
                    urepo = UsageRepository(session)
                    await usage.record(urepo, counted, batch.outcomes)
                    new = {o.charge_id for o in batch.new}
                    alerts = await usage.low_balance_crossings(
                        urepo, [o.owner_id for o in batch.new],
                        [o.owner_id for o in batch.outcomes if o.charge_id not in new],
                    )  # fmt: skip
            except Exception as err:
                if attempt == ATTEMPTS or not _retryable(err):
                    raise
                await asyncio.sleep(0.02 * 2**attempt * (1 + random.random()))
                continue
            self._count(batch)
            if batch.recharges and self.on_recharges is not None:
                self.on_recharges(batch.recharges)
            return batch.outcomes, alerts
        raise AssertionError("unreachable")

    @staticmethod
    def _count(batch: service.ChargeBatch) -> None:
        collected = [o.amount_cents for o in batch.new if o.collected]
        uncollected = [o.amount_cents for o in batch.new if not o.collected]
        for label, amounts in (("collected", collected), ("uncollected", uncollected)):
            if amounts:
                metrics.CHARGES.labels(label).inc(len(amounts))
                metrics.CHARGED_CENTS.labels(label).inc(sum(amounts))
        if batch.duplicates:
            metrics.DUPLICATES.inc(batch.duplicates)

    async def _finish(
        self, outcomes: list[ChargeOutcome], alerts: list[BalanceLow], msgs: list[Msg], traces: dict[str, Carrier]
    ) -> None:
        try:
            await publish_outcomes(self.publisher, outcomes, traces, alerts)
        except Exception as err:
            # Committed but not announced: redelivery finds the charges and publishes their outcomes then.
            metrics.BATCH_FAILURES.labels("publish").inc()
            log.warning("charge outcomes not stored (%s); redelivering their events", type(err).__name__)
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=self.settings.charge_retry_delay_s)
            return
        finally:
            self._inflight.release()
        try:
            for msg in msgs:
                await msg.ack()
        except Exception as err:  # connection lost: the rest come back, find their charges, are acked then
            log.warning("acknowledging charged events failed: %s", type(err).__name__)

    async def _sample_lag(self) -> None:
        assert self._js is not None
        while True:
            try:
                info = await self._js.consumer_info(STREAM, self.settings.charge_consumer)
            except Exception as err:
                log.debug("consumer info unavailable: %s", type(err).__name__)
            else:
                metrics.CONSUMER_PENDING.set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.set(info.num_ack_pending or 0)
                metrics.CONSUMER_REDELIVERED.set(info.num_redelivered or 0)
            await asyncio.sleep(self.settings.consumer_lag_sample_s)
