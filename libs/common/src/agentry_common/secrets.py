"""Secrets resolved from the keys service (a run's BYO LLM key and MCP server headers for the runner, a webhook's
signing secret for the webhooks service), once, then kept in this process's memory, so a run of an endpoint with
its own key does not wait for a keys round trip (a database read and a decryption) on its critical path.

Every answer comes sealed to a key pair of this process (`sealed.ReplyKey`): whoever copies it off the bus,
another account's JetStream stream on our inbox or an operator listening on `>`, reads ciphertext.

Why a cached value is never stale: a secret's value never changes under its id. The gateway stores a new
secret (a new id) for a new value and points the endpoint at it, so a run started after the change carries
the new id in its endpoint snapshot and misses the cache. What can still name an old id is a deleted secret
(a key removed, an endpoint or a tool server deleted) reached through a gateway's not yet refreshed catalog
copy; for that, the keys service broadcasts `secrets.changed` (ids only) before it acknowledges a deletion
or an in-place replacement, and every runner drops those ids at once. A broadcast missed while disconnected
is covered by dropping everything on reconnect, and the TTL bounds the rest. Nothing is cached when the
resolution failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cachetools import TTLCache
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from . import rpc, subjects
from .events import SecretsChanged
from .requests import ResolvedSecret, ResolveSecret
from .sealed import ReplyKey

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (secret id, owner id): a secret resolves only for its owner, and is cached so


class SecretCache:
    def __init__(
        self,
        nc: Client,
        *,
        rpc_timeout_s: float,
        ttl_s: float,
        max_entries: int,
        on_lookup: Callable[[str], object] = lambda source: None,
    ):
        self.nc = nc
        self.reply_key = ReplyKey()  # the keys service seals every value to it
        self.on_lookup = on_lookup  # told "cache" or "keys" for each lookup (a service's metric)
        self.rpc_timeout_s = rpc_timeout_s
        self.ttl_s = ttl_s
        self._values: TTLCache[Key, str] = TTLCache(maxsize=max(1, max_entries), ttl=max(ttl_s, 0.001))
        self._loading: dict[Key, asyncio.Task[str]] = {}
        self._generation = 0  # bumped by every drop: a resolution that straddles one caches nothing
        self._reconnects = 0
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reconnects = self.nc.stats["reconnects"]
        await self.nc.subscribe(subjects.SECRETS_CHANGED, cb=self._on_changed)
        if self.ttl_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="secret-cache-sweep")

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.clear()

    async def _sweep(self) -> None:
        """Expired values leave memory on time even when no run comes to push them out."""
        while True:
            await asyncio.sleep(max(self.ttl_s / 4, 0.05))
            self._values.expire()

    async def _on_changed(self, msg: Msg) -> None:
        try:
            changed = SecretsChanged.model_validate_json(msg.data)
        except ValidationError:
            log.error("dropping a secrets.changed that is not a SecretsChanged")
            return
        self.forget(changed.secret_ids)

    def forget(self, secret_ids: list[str]) -> None:
        self._generation += 1
        gone = set(secret_ids)
        for key in [k for k in self._values if k[0] in gone]:
            self._values.pop(key, None)
        for key in [k for k in self._loading if k[0] in gone]:
            self._loading.pop(key, None)  # later callers resolve afresh instead of joining it

    def clear(self) -> None:
        self._generation += 1
        self._values.clear()
        self._loading.clear()

    def __len__(self) -> int:
        return len(self._values)

    def holds(self, owner_id: str, secret_ids: list[str]) -> bool:
        """Whether `get` would answer each of these from memory, without waiting (so a caller need not run the
        lookups side by side as tasks: each task costs a turn of the event loop)."""
        if self.ttl_s <= 0 or self.nc.stats["reconnects"] != self._reconnects:
            return False
        return all((secret_id, owner_id) in self._values for secret_id in secret_ids)

    async def get(self, secret_id: str, owner_id: str) -> str:
        """The secret's value; raises NotFound (gone, or not this owner's) or ServiceUnavailable (keys away)."""
        reconnects = self.nc.stats["reconnects"]
        if reconnects != self._reconnects:  # broadcasts may have been missed while disconnected
            self._reconnects = reconnects
            self.clear()
        key = (secret_id, owner_id)
        value = self._values.get(key) if self.ttl_s > 0 else None
        if value is not None:
            self.on_lookup("cache")
            return value
        self.on_lookup("keys")
        # One resolution per secret at a time: a burst of runs of a cold endpoint sends one request.
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.create_task(self._load(key, self._generation))
            loading.add_done_callback(lambda task: self._loaded(key, task))
        return await asyncio.shield(loading)

    def _loaded(self, key: Key, task: asyncio.Task[str]) -> None:
        if self._loading.get(key) is task:
            self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, so a resolution every caller left is not reported as lost

    async def _load(self, key: Key, generation: int) -> str:
        value = await self.resolve(*key)
        if self.ttl_s > 0 and generation == self._generation:
            with contextlib.suppress(ValueError):  # a value larger than the cache: used, not kept
                self._values[key] = value
        return value

    async def resolve(self, secret_id: str, owner_id: str) -> str:
        """Ask the keys service, bypassing the cache (for a one-off read, e.g. a tool server's headers)."""
        request = ResolveSecret(secret_id=secret_id, owner_id=owner_id, reply_key=self.reply_key.public)
        reply = await rpc.call(
            self.nc, subjects.SECRETS_RESOLVE, request, ResolvedSecret,
            timeout=self.rpc_timeout_s, unavailable="the keys service is unavailable",
        )  # fmt: skip
        return self.reply_key.open(reply.sealed, secret_id)
