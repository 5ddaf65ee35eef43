"""The delivery loop: take due deliveries from the database (the durable queue), send them, log each attempt.

Pending deliveries with `next_attempt_at` are the queue. A replica takes due ones with `FOR UPDATE SKIP
LOCKED` and moves them past a lease, so several replicas share the work without sending one twice at once,
and a replica that dies mid-send leaves them to be taken again when the lease runs out (at least once). The
loop looks for due deliveries every `webhook_poll_s`, and at once when this process has just queued some.
Every `webhook_purge_s` it deletes finished deliveries older than `webhook_retention_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import datetime, timedelta

from agentry_common.container import UnitOfWork
from agentry_common.events import utcnow
from agentry_common.secrets import SecretCache

from .. import metrics, service
from ..delivery import Outcome, Sender
from ..models import DeliveryAttempt
from ..repository import Claimed, WebhooksRepository
from ..settings import Settings

log = logging.getLogger(__name__)
PURGE_BATCH = 1000  # rows per transaction: a long backlog goes in short locks


class DeliveryScheduler:
    def __init__(self, settings: Settings, unit_of_work: UnitOfWork[WebhooksRepository]):
        self.settings = settings
        self.unit_of_work = unit_of_work
        self.sender: Sender | None = None
        self.secrets: SecretCache | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Deliveries were just queued: look now rather than at the next poll."""
        self._wake.set()

    def start(self, secrets_cache: SecretCache) -> None:
        self.secrets = secrets_cache
        self.sender = Sender(self.settings)
        self._loop = asyncio.create_task(self._run())
        self._sampler = asyncio.create_task(self._sample_backlog())
        self._purger = asyncio.create_task(self._purge_finished())

    async def stop(self) -> None:
        """Stop taking deliveries and let those being sent finish (their receivers get at most the timeout)."""
        self._stopping.set()
        self._wake.set()
        for task in (self._sampler, self._purger):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self.sender is not None:
            await self.sender.close()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.webhook_concurrency - len(self._sending)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception as err:
                    log.warning("cannot take due deliveries: %s", type(err).__name__)
            for item in claimed:
                task = asyncio.create_task(self._deliver(item))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)  # more may be due: look again at once
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.webhook_poll_s)

    async def _sample_backlog(self) -> None:
        while True:
            try:
                async with self.unit_of_work() as repo:
                    metrics.DUE.set(await repo.count_due())
            except Exception as err:
                log.debug("cannot count due deliveries: %s", type(err).__name__)
            await asyncio.sleep(self.settings.backlog_sample_s)

    async def _purge_finished(self) -> None:
        retention = timedelta(seconds=self.settings.webhook_retention_s)
        while True:
            try:
                purged = 0
                while True:
                    async with self.unit_of_work() as repo:
                        batch = await repo.purge_finished(utcnow() - retention, PURGE_BATCH)
                    purged += batch
                    if batch < PURGE_BATCH:
                        break
                if purged:
                    log.info("deleted %d finished deliveries past retention", purged)
            except Exception as err:
                log.warning("cannot delete old deliveries: %s", type(err).__name__)
            await asyncio.sleep(self.settings.webhook_purge_s)

    async def _claim(self, limit: int) -> list[Claimed]:
        lease = secrets.token_hex(16)
        async with self.unit_of_work() as repo:
            return await repo.claim_due(limit, lease, self.settings.webhook_lease_s)

    async def _deliver(self, item: Claimed) -> None:
        try:
            if not item.enabled:  # disabled since it was queued: stop, without an attempt
                await self._record(item, None, "failed", None)
                return
            outcome = await self._send(item)
            attempt = DeliveryAttempt(
                delivery_id=item.id, at=outcome.at, response_status=outcome.response_status,
                latency_ms=outcome.latency_ms, error=outcome.error,
            )  # fmt: skip
            if outcome.ok:
                await self._record(item, attempt, "succeeded", None)
                metrics.ATTEMPTS.labels("succeeded").inc()
                return
            metrics.ATTEMPTS.labels("failed").inc()
            retry_at = service.next_attempt(item.attempt_count + 1, item.give_up_at, self.settings)
            await self._record(item, attempt, "pending" if retry_at else "failed", retry_at)
            if retry_at is None:
                metrics.GAVE_UP.inc()
        except Exception:
            # Nothing recorded: the lease runs out and the delivery is taken again (at least once).
            log.exception("delivery failed unexpectedly", extra={"delivery_id": item.id})

    async def _send(self, item: Claimed) -> Outcome:
        assert self.sender is not None and self.secrets is not None
        try:
            secret = await self.secrets.get(item.secret_id, item.owner_id)
        except Exception as err:
            log.warning("signing secret unavailable (%s)", type(err).__name__, extra={"delivery_id": item.id})
            return Outcome(utcnow(), False, None, 0, "signing_secret_unavailable")
        return await self.sender.send(item.url, item.id, item.body, secret)

    async def _record(self, item: Claimed, attempt: DeliveryAttempt | None, status: str, at: datetime | None) -> None:
        async with self.unit_of_work() as repo:
            kept = await repo.record(item, attempt, status, at)
        if not kept:
            log.info("delivery re-queued or taken over while sending", extra={"delivery_id": item.id})
