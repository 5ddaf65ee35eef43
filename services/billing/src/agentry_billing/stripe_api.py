"""The Stripe adapter: the few Stripe API calls billing makes, through the official `stripe` library (async
methods, httpx underneath), and webhook signature checks.

Every create call carries a Stripe idempotency key derived from our own ids, so a retry after a timeout or a
crash (or two replicas racing) gets the same Customer, Checkout Session or PaymentIntent back, never a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from .settings import Settings

# Stripe's default: a signature older than this is refused (replays of a captured request).
SIGNATURE_TOLERANCE_S = 300


class PaymentProviderError(Exception):
    """Stripe refused or could not be reached. The message is Stripe's user-facing one, never a key."""


class CardDeclined(PaymentProviderError):
    """An off-session payment was declined (no retry will change that)."""


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str


@dataclass(frozen=True)
class OffSessionPayment:
    payment_intent_id: str
    status: str


class StripeApi:
    def __init__(self, settings: Settings):
        assert settings.stripe_secret_key is not None and settings.stripe_webhook_secret is not None
        self._webhook_secret = settings.stripe_webhook_secret.get_secret_value()
        self.public_url = settings.public_url.rstrip("/")
        self.client = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
            http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout_s),
            max_network_retries=2,  # safe: every create below has an idempotency key
        )

    def verify(self, payload: str, signature: str) -> stripe.Event:
        """The event, if `signature` is Stripe's for exactly this payload and recent; else `ValueError`."""
        try:
            event: stripe.Event = stripe.Webhook.construct_event(
                payload, signature, self._webhook_secret, tolerance=SIGNATURE_TOLERANCE_S
            )
            return event
        except stripe.SignatureVerificationError as err:
            raise ValueError("bad signature") from err

    async def customer(self, owner_id: str) -> str:
        customer = await self._call(
            self.client.v1.customers.create_async(
                params={"metadata": {"owner_id": owner_id}, "description": f"Agentry wallet of {owner_id}"},
                options={"idempotency_key": f"agentry-customer-{owner_id}"},
            )
        )
        return str(customer.id)

    async def checkout(self, *, deposit_id: str, owner_id: str, customer_id: str, amount_cents: int,
                       currency: str) -> Checkout:  # fmt: skip
        metadata = {"deposit_id": deposit_id, "owner_id": owner_id}
        session = await self._call(
            self.client.v1.checkout.sessions.create_async(
                params={
                    "mode": "payment",
                    "customer": customer_id,
                    "client_reference_id": deposit_id,
                    "metadata": metadata,
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": currency.lower(),
                                "unit_amount": amount_cents,
                                "product_data": {"name": "Agentry wallet top-up"},
                            },
                        }
                    ],
                    # The card is saved for auto-recharge; the PaymentIntent carries our ids for its own events.
                    "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
                    "success_url": f"{self.public_url}/console/wallet?deposit={deposit_id}&status=success",
                    "cancel_url": f"{self.public_url}/console/wallet?deposit={deposit_id}&status=cancelled",
                },
                options={"idempotency_key": f"agentry-checkout-{deposit_id}"},
            )
        )
        if not session.url:
            raise PaymentProviderError("Stripe returned a Checkout Session without a URL")
        return Checkout(session_id=str(session.id), url=str(session.url))

    async def charge_off_session(
        self,
        *,
        deposit_id: str,
        owner_id: str,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        currency: str,
        idempotency_key: str,
    ) -> OffSessionPayment:
        try:
            intent = await self._call(
                self.client.v1.payment_intents.create_async(
                    params={
                        "amount": amount_cents,
                        "currency": currency.lower(),
                        "customer": customer_id,
                        "payment_method": payment_method_id,
                        "off_session": True,
                        "confirm": True,
                        "description": "Agentry wallet auto-recharge",
                        "metadata": {"deposit_id": deposit_id, "owner_id": owner_id, "purpose": "auto_recharge"},
                    },
                    options={"idempotency_key": idempotency_key},
                )
            )
        except stripe.CardError as err:
            raise CardDeclined(err.user_message or "the card was declined") from err
        return OffSessionPayment(payment_intent_id=str(intent.id), status=str(intent.status))

    @staticmethod
    async def _call(request: Any) -> Any:
        try:
            return await request
        except stripe.CardError:
            raise
        except stripe.StripeError as err:
            # The library's message names the request, never the key; keep only the user-facing part.
            raise PaymentProviderError(err.user_message or type(err).__name__) from err
