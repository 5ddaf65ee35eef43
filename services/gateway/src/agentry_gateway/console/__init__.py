"""The owner console: a static single-page app served at `/console/` that calls the public HTTP API only.

No build step and no CDN (it works offline): plain ES modules under `static/`. The session is the pasted JWT,
kept in the tab's sessionStorage and sent as `Authorization: Bearer`, like any API client. That keeps the API
free of ambient credentials (so no CSRF surface); the remaining risk, script injection, is closed by a strict
Content-Security-Policy on every console response (scripts from this origin only, no inline code) and by the
app rendering data as text, never as HTML.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

# connect-src 'self': the app talks to this gateway only. form-action 'self' + frame-ancestors 'none' stop a
# form being posted elsewhere and the console being framed (clickjacking). A Stripe checkout is a navigation.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The shell is small; always revalidated so a gateway upgrade never runs a stale app against a new API.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def console_app() -> ConsoleFiles:
    return ConsoleFiles(directory=STATIC, html=True)
