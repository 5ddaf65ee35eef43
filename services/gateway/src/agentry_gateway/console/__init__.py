"""The owner console: a static single-page app served at `/console/` that calls the public HTTP API only.

No build step and no CDN (it works offline): plain ES modules under `static/`. The session is a JWT (pasted in
development, or an ID token from the OpenID provider: authorization code + PKCE), kept in the tab's
sessionStorage and sent as `Authorization: Bearer`, like any API client. That keeps the API free of ambient
credentials (so no CSRF surface); the remaining risk, script injection, is closed by a strict
Content-Security-Policy on every console response (scripts from this origin only, no inline code) and by the
app rendering data as text, never as HTML.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

# connect-src: the app talks to this gateway (and to the OpenID provider's token endpoint, when configured).
# form-action 'self' + frame-ancestors 'none' stop a form being posted elsewhere and the console being framed
# (clickjacking). Going to the provider's sign-in page or a Stripe checkout is a navigation, not a fetch.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{extra}; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # an authorization code in the URL never leaks to another site
    # The shell is small; always revalidated so a gateway upgrade never runs a stale app against a new API.
    "Cache-Control": "no-cache",
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Oidc:
    """The provider's endpoints, from its discovery document (fetched by the gateway, kept while it answers)."""

    RETRY_AFTER_S = 30.0

    def __init__(self, settings: Settings):
        self.settings = settings
        self._doc: dict[str, Any] | None = None
        self._failed_at = -self.RETRY_AFTER_S

    @property
    def configured(self) -> bool:
        return bool(self.settings.oidc_issuer and self.settings.oidc_client_id)

    async def config(self) -> dict[str, Any] | None:
        if not self.configured or self._doc is not None:
            return self._doc
        if time.monotonic() - self._failed_at < self.RETRY_AFTER_S:
            return None
        issuer = str(self.settings.oidc_issuer).rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"{issuer}/.well-known/openid-configuration")
                r.raise_for_status()
                doc = r.json()
            self._doc = {
                "issuer": issuer,
                "client_id": self.settings.oidc_client_id,
                "scope": self.settings.oidc_scope,
                "authorization_endpoint": str(doc["authorization_endpoint"]),
                "token_endpoint": str(doc["token_endpoint"]),
            }
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            self._failed_at = time.monotonic()
            log.warning("OpenID discovery failed", extra={"issuer": issuer, "error": type(err).__name__})
        return self._doc

    def csp(self) -> str:
        extra = f" {_origin(self._doc['token_endpoint'])}" if self._doc else ""
        return CSP.format(extra=extra)


class ConsoleFiles(StaticFiles):
    def __init__(self, oidc: Oidc):
        super().__init__(directory=STATIC, html=True)
        self.oidc = oidc

    async def get_response(self, path: str, scope: Scope) -> Response:
        await self.oidc.config()  # the policy names the token endpoint once it is known
        response = await super().get_response(path, scope)
        response.headers.update({**HEADERS, "Content-Security-Policy": self.oidc.csp()})
        return response


def install(app: FastAPI, settings: Settings) -> None:
    """`/console/config.json` (what the sign-in page offers) and the app's files under `/console/`."""
    oidc = Oidc(settings)

    @app.get("/console/config.json", include_in_schema=False)
    async def console_config() -> JSONResponse:
        config = await oidc.config()
        problem = "the OpenID provider's discovery document is unavailable" if oidc.configured and not config else None
        return JSONResponse({"oidc": config, "oidc_problem": problem}, headers={**HEADERS, "Cache-Control": "no-store"})

    app.mount("/console", ConsoleFiles(oidc), name="console")
