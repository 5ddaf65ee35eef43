"""What the billing process holds while it runs, built in the lifespan (`agentry_common.container`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from faststream import Context
from faststream.nats import NatsBroker

from agentry_common.batch_publish import BatchPublisher
from agentry_common.container import CONTAINER, ServiceContainer, SqlDatabase

from ..payments_repository import Recharge
from ..repository import BillingRepository
from ..settings import Settings
from ..spend_repository import SpendRepository
from ..stripe_api import StripeApi
from ..usage_repository import UsageRepository
from .consumer import ChargeConsumer


class Billing(ServiceContainer):
    settings: Settings

    def __init__(self, settings: Settings, broker: NatsBroker):
        # Imported here: their handlers take this container as a parameter.
        from .spend import HoldEnder

        super().__init__(settings, broker)
        self.database = SqlDatabase(settings.database_url, pool_size=settings.db_pool_size)
        self.sessions = self.database.sessions
        self.unit_of_work = self.database.unit_of_work(BillingRepository)
        self.spend_unit_of_work = self.database.unit_of_work(SpendRepository)
        self.usage_unit_of_work = self.database.unit_of_work(UsageRepository)
        # Outcomes go out as atomic batches (BILLING_EVENTS allows them); shared with the charge consumer.
        self.publisher = BatchPublisher(atomic=True)
        # Auto-recharge needs Stripe: in manual mode the charge batch does not even look for thresholds crossed.
        self.stripe = StripeApi(settings) if settings.payment_mode == "stripe" else None
        on_recharges = self.start_recharges if self.stripe is not None else None
        self.consumer = ChargeConsumer(settings, self.sessions, self.publisher, on_recharges=on_recharges)
        self.holds = HoldEnder(self)

    async def start(self) -> None:
        from .payments import retry_recharges

        await self.publisher.start(self.nc)
        await self.consumer.start(self.nc)
        await self.holds.start(self.nc)
        if self.stripe is not None:
            self.spawn(retry_recharges(self))

    async def stop(self) -> None:
        await self.holds.stop()
        await self.consumer.stop()

    def start_recharges(self, recharges: Sequence[Recharge]) -> None:
        """Called by the charge consumer after the batch that crossed the thresholds committed."""
        from .payments import pay_recharges

        if self.stripe is not None and recharges:
            self.spawn(pay_recharges(self, list(recharges)))


# A FastStream handler's parameter: the running process's container.
BillingDep = Annotated[Billing, Context(CONTAINER)]
