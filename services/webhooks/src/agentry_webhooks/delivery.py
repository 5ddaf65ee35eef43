"""Sending one delivery: resolve the signing secret, sign per Standard Webhooks, POST through the SSRF guard."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import httpx
from nats.aio.client import Client
from standardwebhooks import Webhook as Signer

from agentry_common import subjects
from agentry_common.events import utcnow
from agentry_common.netguard import UrlNotAllowed, guard_transport
from agentry_common.requests import ResolvedSecret, ResolveSecret
from agentry_common.rpc import call

from .settings import Settings

USER_AGENT = "Agentry-Webhooks/1"


class SecretCache:
    """Decrypted signing secrets by secret id, for a bounded time and number: a burst of deliveries to one
    webhook asks the keys service once. Only in this process's memory, as the keys service keeps them."""

    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.settings = settings
        self._values: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def get(self, secret_id: str, owner_id: str) -> str:
        now = time.monotonic()
        cached = self._values.get(secret_id)
        if cached is not None and cached[1] > now:
            self._values.move_to_end(secret_id)
            return cached[0]
        request = ResolveSecret(secret_id=secret_id, owner_id=owner_id)
        resolved: ResolvedSecret = await call(
            self.nc, subjects.SECRETS_RESOLVE, request, ResolvedSecret,
            timeout=self.settings.rpc_timeout_s, unavailable="the keys service is unavailable",
        )  # fmt: skip
        if self.settings.secret_cache_ttl_s > 0:
            self._values[secret_id] = (resolved.value, now + self.settings.secret_cache_ttl_s)
            self._values.move_to_end(secret_id)
            while len(self._values) > self.settings.secret_cache_size:
                self._values.popitem(last=False)
        value: str = resolved.value
        return value

    def forget(self, secret_id: str) -> None:
        self._values.pop(secret_id, None)


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
