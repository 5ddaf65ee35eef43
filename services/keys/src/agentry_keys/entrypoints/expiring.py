"""`keys.key.expiring`: a sweep that announces the caller keys expiring within the week, once per key and expiry.

Each replica sweeps every `KEY_EXPIRY_SWEEP_S`; the rows it takes are locked (`SKIP LOCKED`), so replicas share
the work. A key is marked and its event published in one transaction: a publish that fails rolls the mark back
for the next sweep, and a publish whose commit then fails is published again and de-duplicated (`Nats-Msg-Id`
within the broker's window, the webhooks service's event key after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentry_common import asyncapi, subjects
from agentry_common.broker import publish_event
from agentry_common.events import KeyExpiring

if TYPE_CHECKING:
    from .container import Keys

log = logging.getLogger(__name__)
BATCH = 100

asyncapi.publishes(
    subjects.KEY_EXPIRING, KeyExpiring, by="keys", stream=subjects.KEY_EVENTS_STREAM,
    description="A caller key expires within a week (or sooner: a key created or changed to expire sooner is "
    "announced at once); once per key and expiry time. Revoked keys are not announced.",
)  # fmt: skip


async def announce_expiring(keys: Keys) -> int:
    """One sweep: every key due an announcement, announced. How many were."""
    js = keys.nc.jetstream()
    announced = 0
    while True:
        async with keys.unit_of_work() as repo:
            events = await keys.service.expiring(repo, datetime.now(UTC), BATCH)
            for event in events:
                await publish_event(js, subjects.KEY_EXPIRING, event)
        announced += len(events)
        if len(events) < BATCH:
            return announced


async def sweep_expiring(keys: Keys, every_s: float) -> None:
    """Sweep at once, then every `every_s`, until the process stops."""
    stop = keys.stopping
    while not stop.is_set():
        try:
            if announced := await announce_expiring(keys):
                log.info("announced %d expiring keys", announced)
        except Exception as err:  # the marks rolled back: the next sweep tries again
            log.warning("could not announce expiring keys: %s", type(err).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
