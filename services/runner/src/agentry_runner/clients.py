"""The runner's outbound HTTP: one pool per destination kind, and the connection a run's LLM calls use."""

from __future__ import annotations

import httpx2

from agentry_common.errors import UpstreamFailed
from agentry_common.events import EndpointSnapshot
from agentry_common.netguard import guard_transport

from .providers import PROVIDERS, Connection
from .providers.http import env_proxy, guarded_session, platform_session
from .settings import Settings

PLATFORM_PROVIDERS = ("openai", "groq", "anthropic", "gemini")


class HttpClients:
    """One pool per destination kind, for the life of the process: connection reuse is most of the speed."""

    def __init__(self, settings: Settings):
        self.llm = platform_session()
        self.custom_llm = guarded_session(allow_private=settings.allow_private_urls)
        self.mcp = guard_transport(
            httpx2.AsyncHTTPTransport(trust_env=False, limits=httpx2.Limits(max_connections=256)),
            allow_private=settings.allow_private_urls,
        )

    async def aclose(self) -> None:
        await self.llm.close()
        await self.custom_llm.close()
        await self.mcp.aclose()


def connection(settings: Settings, clients: HttpClients, endpoint: EndpointSnapshot, byo_key: str | None) -> Connection:
    """How the run reaches its LLM: the pool, base URL and key (the owner's own, else the platform's)."""
    provider = endpoint.llm_provider
    if provider not in PROVIDERS:
        raise UpstreamFailed(f"unknown LLM provider {provider!r}", code="llm_provider_error")
    s = settings
    client, base_url, platform_key = clients.llm, "", s.custom_api_key
    if provider == "custom":
        if not endpoint.llm_base_url:
            raise UpstreamFailed("the custom provider needs llm_base_url", code="llm_provider_error")
        client, base_url = clients.custom_llm, endpoint.llm_base_url
    elif provider in PLATFORM_PROVIDERS:
        base_url = getattr(s, f"{provider}_base_url")
        platform_key = getattr(s, f"{provider}_api_key")
    api_key = byo_key or (platform_key.get_secret_value() if platform_key else None)
    if provider in PLATFORM_PROVIDERS and not api_key:
        raise UpstreamFailed(f"no API key is configured for provider {provider!r}", code="llm_auth_error")
    proxy, proxy_auth = env_proxy(base_url) if client is clients.llm else (None, None)
    return Connection(
        client, base_url, api_key, timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries, backoff_s=s.llm_backoff_s,
        proxy=proxy, proxy_auth=proxy_auth,
    )  # fmt: skip
