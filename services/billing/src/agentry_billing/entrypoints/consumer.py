"""The charge consumer: `run.completed` and `run.failed` from a durable JetStream pull consumer, in batches.

For each batch: one transaction charges every billable run (idempotent per run) and counts every run in the
usage projection (idempotent per run, `usage.py`), then the outcome events (and low-balance crossings) are
published, then — only then — the batch is acknowledged. A crash at any point leaves the events
unacknowledged; their redelivery finds the charges already made and publishes the same outcomes again.
While one batch's outcomes are being stored by JetStream, the next batch is already being charged.

It runs on the shared pull worker (`agentry_common.jetstream`) rather than a FastStream batch subscriber because
the guarantees live in the acknowledgements: an unreadable event is terminated alone, one that fails to charge
is redelivered alone after a delay, and nothing is acknowledged before its outcome is stored. The worker holds
at most `charge_inflight_batches + 1` batches: one being charged (charging is one batch at a time), the others
publishing their outcomes or waiting for their turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import errors as pg_errors
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt

from agentry_common import asyncapi, subjects
from agentry_common.batch_publish import BatchPublisher
from agentry_common.events import BalanceLow, ChargeCollected, ChargeUncollected, Event, RunCompleted, RunFailed
from agentry_common.jetstream import ACK, TERM, LagGauges, Nak, PullWorker, Verdict

from .. import metrics, service, spend, usage
from ..domain import ChargeOutcome, ChargeRun, UnbillableEvent
from ..payments_repository import Recharge
from ..repository import BillingRepository
from ..settings import Settings
from ..spend_repository import SpendRepository
from ..usage_repository import UsageRepository
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


def _retryable(err: BaseException) -> bool:
    if isinstance(err, service.ChargeConflict):
        return True
    return isinstance(err, DBAPIError) and isinstance(err.orig, _RETRYABLE_SQL)


def _backoff(state: RetryCallState) -> float:
    """40, 80, 160, 320 ms after attempts 1 to 4, each up to twice as long at random (replicas drift apart)."""
    return 0.02 * 2.0**state.attempt_number * (1 + random.random())


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
        self._charging = asyncio.Lock()  # one batch charged at a time; the others publish or wait
        self._worker: PullWorker | None = None

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
        s = self.settings
        lag = LagGauges(
            metrics.CONSUMER_PENDING, metrics.CONSUMER_ACK_PENDING, metrics.CONSUMER_REDELIVERED,
            every_s=s.consumer_lag_sample_s,
        )  # fmt: skip
        self._worker = PullWorker(
            nc, STREAM, self.config, self.handle, capacity=s.charge_batch_size * (s.charge_inflight_batches + 1),
            batch=s.charge_batch_size, wait_s=s.charge_fetch_wait_s, lag=lag, gather=True,
        )  # fmt: skip
        await self._worker.start()
        log.info("charging run.completed", extra={"consumer": s.charge_consumer})

    async def stop(self) -> None:
        """Finish the batches at hand and publish their outcomes; nothing fetched is left unacknowledged."""
        if self._worker is not None:
            await self._worker.stop()

    async def handle(self, msgs: Sequence[Msg]) -> list[Verdict]:
        """Charge a batch, then store its outcomes: one verdict per event (ack once its outcome is stored)."""
        verdicts: list[Verdict] = [TERM] * len(msgs)
        async with self._charging:
            charged, outcomes, alerts, carried = await self._charge_batch(msgs, verdicts)
        if not charged:
            return verdicts
        try:
            await publish_outcomes(self.publisher, outcomes, carried, alerts)
        except Exception as err:
            # Committed but not announced: redelivery finds the charges and publishes their outcomes then.
            metrics.BATCH_FAILURES.labels("publish").inc()
            log.warning("charge outcomes not stored (%s); redelivering their events", type(err).__name__)
            for i in charged:
                verdicts[i] = Nak(self.settings.charge_retry_delay_s)
            return verdicts
        for i in charged:
            verdicts[i] = ACK
        return verdicts

    async def _charge_batch(
        self, msgs: Sequence[Msg], verdicts: list[Verdict]
    ) -> tuple[list[int], list[ChargeOutcome], list[BalanceLow], dict[str, Carrier]]:
        """Charge and count the batch's events in one transaction (one by one if that fails). Unreadable events
        keep their `TERM`, those that failed to charge get a delayed `Nak`; returns the indexes of the charged."""
        started, started_ns = time.monotonic(), time.time_ns()
        items: list[tuple[int, ChargeRun | None, usage.UsageRun]] = []
        traces: dict[str, Carrier] = {}  # run_id → the trace its run.completed carries on
        for i, msg in enumerate(msgs):
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
                continue
            if run is None and isinstance(event, RunCompleted):
                metrics.SKIPPED.labels("test" if event.is_test else "free").inc()
            elif run is not None and event.trace:
                traces[run.run_id] = event.trace
            items.append((i, run, counted))

        outcomes: list[ChargeOutcome] = []
        alerts: list[BalanceLow] = []
        charged: list[int] = []  # acknowledged once the outcomes are stored
        if items:
            try:
                outcomes, alerts = await self._charge(
                    [run for _, run, _ in items if run is not None], [c for _, _, c in items]
                )
                charged += [i for i, _, _ in items]
            except Exception:
                metrics.BATCH_FAILURES.labels("batch").inc()
                log.exception("a batch of %d could not be charged; charging its events one by one", len(items))
                for i, run, counted in items:
                    try:
                        done, fired = await self._charge([run] if run is not None else [], [counted])
                        outcomes += done
                        alerts += fired
                        charged.append(i)
                    except Exception:
                        metrics.BATCH_FAILURES.labels("single").inc()
                        log.exception("run event could not be charged; redelivering later",
                                      extra={"run_id": counted.run_id})  # fmt: skip
                        verdicts[i] = Nak(self.settings.charge_retry_delay_s)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        metrics.BATCH_EVENTS.observe(len(msgs))
        return charged, outcomes, alerts, charge_spans(outcomes, traces, started_ns)

    async def _charge(
        self, runs: list[ChargeRun], counted: list[usage.UsageRun]
    ) -> tuple[list[ChargeOutcome], list[BalanceLow]]:
        """Charge the billable runs and count every run, in one transaction; the outcomes and the low-balance
        crossings it caused."""
        batch, alerts = await self._charge_once(runs, counted)
        self._count(batch)
        if batch.recharges and self.on_recharges is not None:
            self.on_recharges(batch.recharges)
        return batch.outcomes, alerts

    @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(ATTEMPTS), wait=_backoff, reraise=True)
    async def _charge_once(
        self, runs: list[ChargeRun], counted: list[usage.UsageRun]
    ) -> tuple[service.ChargeBatch, list[BalanceLow]]:
        """One try; a deadlock, serialization failure or charge conflict is tried again (`ATTEMPTS` in all)."""
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
        return batch, alerts

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
