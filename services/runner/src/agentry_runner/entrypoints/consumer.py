"""The `run.requested` consumer: a durable pull consumer on the RUNS work queue, shared by every replica.

It runs on the shared pull worker (`agentry_common.jetstream`) rather than a FastStream subscriber: a runner
must fetch a run only when it has a free slot (a fetched run waiting in a local buffer has its ack timer
running and no heartbeat, and would be redelivered elsewhere while it waits), and must heartbeat (`+WPI`) each
run while it executes. One pull request asks for every free slot; each run starts the moment it arrives.

Acks: `ack` once the outcome is recorded and announced; `nak` with a delay when Postgres/NATS failed (the
run is retried); `term` for a message that is not a RunRequested at all. JetStream's own `max_deliver` is
unlimited so a run is never silently dropped while infrastructure is down; the service bounds executions
with `runner_max_deliveries` and records the last delivery failed.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from agentry_common import asyncapi, subjects
from agentry_common.events import RunRequested
from agentry_common.jetstream import ACK, TERM, LagGauges, Nak, PullWorker, Verdict

from .. import metrics
from ..service import RunnerService
from ..settings import Settings

log = logging.getLogger(__name__)
asyncapi.consumes(
    subjects.RUN_REQUESTED, RunRequested, by="runner", stream=subjects.RUNS_STREAM, durable=subjects.RUNNER_CONSUMER,
    description="Runner replicas share the work queue; a run is acknowledged once its outcome is recorded and "
    "announced, and redelivered if its runner dies.",
)  # fmt: skip
FETCH_WAIT_S = 5.0
LAG_SAMPLE_S = 10.0


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.RUNNER_CONSUMER,
        description="Runner replicas pull run requests; explicit acks with in-progress heartbeats.",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.runner_ack_wait_s,
        max_deliver=-1,
        filter_subject=subjects.RUN_REQUESTED,
        max_ack_pending=-1,
    )


class RunConsumer:
    """Runs pulled as free slots allow (`runner_concurrency`), each executed the moment it arrives, heartbeated
    every third of the ack wait."""

    def __init__(self, service: RunnerService, nc: Client, settings: Settings):
        self.service = service
        self.nc = nc
        self.settings = settings
        self.worker = PullWorker(
            nc, subjects.RUNS_STREAM.name, consumer_config(settings), self._handle,
            capacity=settings.runner_concurrency, wait_s=FETCH_WAIT_S, heartbeat_s=settings.runner_ack_wait_s / 3,
            lag=LagGauges(metrics.CONSUMER_PENDING, metrics.CONSUMER_ACK_PENDING, every_s=LAG_SAMPLE_S),
        )  # fmt: skip

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        """Stop fetching; let in-flight runs finish within the grace period, hand the rest back."""
        await self.worker.stop(self.settings.runner_shutdown_grace_s)

    async def _handle(self, msgs: list[Msg]) -> list[Verdict]:
        [msg] = msgs
        try:
            event = RunRequested.model_validate_json(msg.data)
        except ValidationError:
            log.error("dropping a run.requested that is not a RunRequested")
            return [TERM]
        delivery = msg.metadata.num_delivered or 1
        try:
            await self.service.process(event, delivery)
        except Exception:
            log.exception("run could not be finished; it will be redelivered", extra={"run_id": event.run_id})
            metrics.REDELIVERED.inc()
            return [Nak(delay=min(2.0**delivery, 30.0))]
        return [ACK]
