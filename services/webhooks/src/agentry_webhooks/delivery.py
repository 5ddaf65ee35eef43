"""Sending one delivery: resolve the signing secret, sign per Standard Webhooks, POST through the SSRF guard."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from standardwebhooks import Webhook as Signer

from agentry_common.events import utcnow
from agentry_common.netguard import UrlNotAllowed, guard_transport

from .settings import Settings

USER_AGENT = "Agentry-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    at: datetime
    ok: bool
    response_status: int | None
    latency_ms: int
    error: str | None


def signed_headers(secret: str, delivery_id: str, at: datetime, body: str) -> dict[str, str]:
    """`webhook-id` is the delivery's id (the same on every retry, so receivers deduplicate on it);
    `webhook-signature` is `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` keyed with the secret's bytes."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(delivery_id, at, body),
    }


class Sender:
    """POSTs deliveries. Every connection goes through the SSRF guard, so a host that resolves to a refused
    address since registration (DNS changed) is not reached. Redirects are not followed: the receiver is the
    URL the owner registered."""

    def __init__(self, settings: Settings):
        self.timeout_s = settings.webhook_timeout_s
        transport = guard_transport(
            httpx.AsyncHTTPTransport(trust_env=False, retries=0), allow_private=settings.allow_private_urls
        )
        self.client = httpx.AsyncClient(
            transport=transport, timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, url: str, delivery_id: str, body: str, secret: str) -> Outcome:
        at = utcnow()
        headers = signed_headers(secret, delivery_id, at, body)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole exchange, not each phase
                response = await self.client.post(url, content=body.encode(), headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"http_{status}"
        except TimeoutError:
            error = "timeout"
        except httpx.TimeoutException:
            error = "timeout"
        except UrlNotAllowed as err:
            error = f"url_not_allowed: {err.message}"
        except (httpx.HTTPError, OSError) as err:  # OSError: the host does not resolve
            error = f"connection_failed: {type(err).__name__}"
        latency_ms = int((time.monotonic() - started) * 1000)
        return Outcome(at, error is None, status, latency_ms, error[:300] if error else None)
