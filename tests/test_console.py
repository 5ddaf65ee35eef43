"""The owner console (issue 20), in a real browser (Debian's chromium driven by Playwright) against the whole
stack: sign in, create an endpoint (a bad field first), copy its key, run it streamed and as a test, see the
runs in history, usage, deposit, a webhook — and no secret ever rendered again after its one showing.

`UPDATE_SCREENSHOTS=1` also copies the screenshots the test takes into docs/screenshots/ (shown in README)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Browser, Page, async_playwright, expect

from agentry_dev.stack import Stack, dev_token

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
ROUTES = ["#/endpoints", "#/wallet", "#/usage", "#/workspaces", "#/webhooks"]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="install Debian's chromium: apt-get install -y chromium (see README)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            await b.close()


async def _go(page: Page, base: str, route: str) -> None:
    """Navigate within the app and wait until the page has its data (app.js marks `main[data-ready]`)."""
    await page.goto(f"{base}/console/{route}")
    await page.wait_for_selector(f'main[data-ready="{route}"]')


async def _shoot(page: Page, tmp: Path, name: str) -> None:
    path = tmp / f"console-{name}.png"
    # Even a throwaway stack's secrets stay out of committed pictures: their one showing is masked.
    secrets = [page.get_by_test_id("api-key-once"), page.get_by_test_id("webhook-secret-once")]
    await page.screenshot(path=str(path), mask=secrets)
    assert path.stat().st_size > 5_000  # something was drawn
    if os.environ.get("UPDATE_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)


async def test_the_console_is_served_offline_with_a_strict_policy(http: httpx.AsyncClient) -> None:
    r = await http.get("/")
    assert r.status_code == 302 and r.headers["location"] == "/console/"
    page = await http.get("/console/")
    assert page.status_code == 200 and 'data-testid="signin-token"' not in page.text  # built by the app
    assert "https://" not in page.text and "http://" not in page.text  # no CDN: it works offline
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert (await http.get(f"/console/{asset}")).status_code == 200, asset
    assert (await http.get("/console/js/endpoints.js")).headers["content-type"].startswith("text/javascript")


@needs_chromium
async def test_an_owner_runs_the_whole_console_flow_and_no_secret_is_rendered_twice(
    browser: Browser, gateway_url: str, user: str, tmp_path: Path
) -> None:
    llm_key = f"sk-test-secret-console-{uuid.uuid4().hex}"
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US",
                                        permissions=["clipboard-read", "clipboard-write"])  # fmt: skip
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Sign in (keyboard only: type the token, Enter), from the root, which leads to the console.
    await page.goto(gateway_url + "/")
    await page.get_by_test_id("signin-token").fill("not-a-jwt")
    await page.get_by_test_id("signin-token").press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    await _shoot(page, tmp_path, "signin")
    await page.get_by_test_id("signin-token").fill(dev_token(user))
    await page.get_by_test_id("signin-token").press("Enter")
    await page.wait_for_selector('main[data-ready="#/endpoints"]')

    # A workspace, through the console.
    await page.get_by_test_id("nav-workspaces").click()
    await page.get_by_label("New workspace name").fill("Acme")
    await page.get_by_test_id("workspace-submit").click()
    await expect(page.get_by_role("heading", name=re.compile("Acme"))).to_be_visible()

    # Create: a price over the limit first → the error is shown at the price field; then fixed.
    await page.get_by_test_id("nav-endpoints").click()
    await page.get_by_test_id("endpoint-create").click()
    await page.get_by_test_id("endpoint-form-name").fill("Invoice parser")
    await page.get_by_test_id("endpoint-form-prompt").fill("Extract the invoice's fields.")
    await page.get_by_test_id("endpoint-form-provider").select_option("mock")
    await page.get_by_label("LLM API key").fill(llm_key)
    await page.get_by_label("Stream responses (SSE)").check()
    await page.get_by_test_id("endpoint-form-price").fill("1000")  # $1000 > the $100 limit
    await page.get_by_test_id("endpoint-form-submit").click()
    price_field = page.locator(".field", has=page.get_by_test_id("endpoint-form-price"))
    await expect(price_field.get_by_test_id("field-error")).to_contain_text("$100.00")  # in dollars, as typed
    await expect(page.get_by_test_id("field-error")).to_have_count(1)
    await expect(page.get_by_test_id("endpoint-form-price")).to_have_attribute("aria-invalid", "true")
    await page.get_by_test_id("endpoint-form-price").scroll_into_view_if_needed()
    await _shoot(page, tmp_path, "create-error")
    await page.get_by_test_id("endpoint-form-price").fill("0.05")
    await page.get_by_test_id("endpoint-form-submit").click()

    # The detail page: the raw key once, with a copy button that puts it on the clipboard.
    await page.wait_for_url(re.compile(r"#/endpoints/aep_"))
    endpoint_route = "#/" + page.url.split("#/", 1)[1]
    api_key = (await page.get_by_test_id("api-key-once").inner_text()).strip()
    assert api_key.startswith("aek_")
    await page.get_by_test_id("api-key-once-copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == api_key
    await expect(page.get_by_role("status")).to_have_count(0)  # the "Copied" notice goes away

    # A streamed run with the key just shown: thinking, then the output and its usage, as they arrive.
    await page.get_by_test_id("test-run-input").fill("Invoice #42: 3 widgets, $30")
    await page.get_by_test_id("test-run-submit").click()
    output = page.get_by_test_id("test-run-output")
    await expect(output).to_contain_text("thinking")
    await expect(output).to_contain_text("tokens in")
    # The owner's test run (no key, never charged), answered in one piece.
    await page.get_by_label(re.compile("Stream it with the key")).uncheck()
    await page.get_by_test_id("test-run-submit").click()
    await expect(output).not_to_contain_text("thinking")
    await expect(output).to_contain_text("tokens in")
    await _shoot(page, tmp_path, "endpoint")

    # History: both runs, with details and charge status (the priced run is owed: the wallet is empty).
    for _ in range(60):
        await _go(page, gateway_url, "#/endpoints")  # away and back: the key is not shown again
        await _go(page, gateway_url, endpoint_route)
        if await page.get_by_test_id("runs-table").locator("tbody tr:not([hidden])").count() >= 2:
            break
        await asyncio.sleep(0.5)
    runs = page.get_by_test_id("runs-table")
    await expect(runs.locator("tbody tr:not([hidden])")).to_have_count(2)
    await expect(runs).to_contain_text("succeeded")
    await expect(runs).to_contain_text("test (free)")
    await expect(page.get_by_test_id("api-key-once")).to_have_count(0)
    await runs.get_by_role("button", name="Details").first.click()
    await expect(runs).to_contain_text("run_")

    # Edit: every field prefilled (the LLM key stays write-only), an error at its field again, then saved.
    await page.get_by_test_id("endpoint-edit").click()
    await page.wait_for_selector(f'main[data-ready="{endpoint_route}/edit"]')
    await expect(page.get_by_test_id("endpoint-form-price")).to_have_value("0.05")
    await expect(page.get_by_label("LLM API key")).to_have_value("")
    await page.get_by_label("Temperature").fill("5")
    await page.get_by_test_id("endpoint-form-price").fill("0.10")
    await page.get_by_test_id("endpoint-form-submit").click()
    temperature = page.locator(".field", has=page.get_by_label("Temperature"))
    await expect(temperature.get_by_test_id("field-error")).to_contain_text("2")
    await page.get_by_label("Temperature").fill("0.5")
    await page.get_by_test_id("endpoint-form-submit").click()
    await page.wait_for_selector(f'main[data-ready="{endpoint_route}"]')
    await expect(page.get_by_text("price per run $0.10")).to_be_visible()

    # Usage: the chart, or its clear "not available" state on a gateway without GET /api/usage.
    await page.get_by_test_id("nav-usage").click()
    await page.wait_for_selector('main[data-ready="#/usage"]')
    chart = page.get_by_test_id("usage-chart")
    await expect(chart).to_be_visible()
    if await chart.get_attribute("data-state") == "data":  # a gateway with GET /api/usage: today's runs drawn
        await expect(chart.locator("svg rect")).not_to_have_count(0)
    await _shoot(page, tmp_path, "usage")

    # Wallet: deposit $5 (= 500 cents), see the balance and the transaction.
    await page.get_by_test_id("nav-wallet").click()
    await page.wait_for_selector('main[data-ready="#/wallet"]')
    await expect(page.get_by_test_id("balance-amount")).to_have_text("$0.00")
    await page.get_by_test_id("deposit-amount").fill("4")  # under the $5.00 minimum: said in dollars
    await page.get_by_test_id("deposit-submit").click()
    await expect(page.get_by_test_id("deposit-error")).to_contain_text("$5.00")
    await page.get_by_test_id("deposit-amount").fill("5")
    await page.get_by_test_id("deposit-submit").click()
    await expect(page.get_by_test_id("transactions-table")).to_contain_text("deposit")
    await expect(page.get_by_test_id("transactions-table")).to_contain_text("$5.00")
    await expect(page.get_by_test_id("balance-amount")).to_have_text(re.compile(r"^\$(5\.00|4\.95)$"))
    await _shoot(page, tmp_path, "wallet")

    # A webhook: its signing secret shown once.
    await page.get_by_test_id("nav-webhooks").click()
    await page.get_by_test_id("webhook-url").fill("http://127.0.0.1:9/hooks/agentry")
    await page.get_by_test_id("webhook-submit").click()
    secret = (await page.get_by_test_id("webhook-secret-once").inner_text()).strip()
    assert secret.startswith("whsec_")
    await expect(page.get_by_role("heading", name="http://127.0.0.1:9/hooks/agentry")).to_be_visible()
    await _shoot(page, tmp_path, "webhooks")
    # Its test event to a URL nobody answers: a failed delivery attempt, listed with a retry button.
    await page.get_by_role("button", name="Send test event").click()
    deliveries = page.get_by_test_id("deliveries-table")
    for _ in range(60):
        if await deliveries.count() and "webhook.test" in await deliveries.inner_text():
            break
        await page.get_by_role("button", name="Refresh deliveries").click()
        await asyncio.sleep(0.5)
    await expect(deliveries).to_contain_text("webhook.test")
    # Its row: a charge of a run made earlier in this flow may land after the webhook exists, a delivery too.
    retry = deliveries.locator("tr", has_text="webhook.test").get_by_role("button", name="Retry")
    await retry.click()
    await expect(retry).to_be_enabled()

    # No secret anywhere after its one showing: every page's HTML, and the tab's storage.
    for route in [*ROUTES, endpoint_route, f"{endpoint_route}/edit"]:
        await _go(page, gateway_url, route)
        html = await page.content()
        for value in (api_key, secret, llm_key):
            assert value not in html, f"a secret is rendered on {route}"
    storage = await page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert api_key not in storage and secret not in storage and llm_key not in storage

    # A phone-sized screen: every page fits without sideways scrolling (wide tables scroll in their own box).
    await page.set_viewport_size({"width": 390, "height": 844})
    for route in [*ROUTES, f"{endpoint_route}/edit", "#/endpoints/new", endpoint_route]:
        await _go(page, gateway_url, route)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, route
    await _shoot(page, tmp_path, "endpoint-mobile")
    assert errors == []

    # Signing out forgets the token: the console asks for one again.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_selector('main[data-ready="#/signin"]')
    assert await page.evaluate("sessionStorage.length") == 0
    await context.close()


class FakeOpenIdProvider:
    """An OpenID provider on loopback speaking the real wire format: discovery, an authorization endpoint that
    signs the user in at once, a token endpoint that checks the PKCE verifier against the challenge, and JWKS."""

    def __init__(self, client_id: str, sub: str):
        self.client_id, self.sub = client_id, sub
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.challenges: dict[str, tuple[str, str]] = {}  # code → (challenge, redirect_uri)
        self.token_requests: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _send(
                self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", "access-control-allow-origin": "*",
                             **(headers or {})}.items():  # fmt: skip
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = dict(parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    base = provider.issuer
                    doc = {"issuer": base, "authorization_endpoint": f"{base}/authorize",
                           "token_endpoint": f"{base}/token", "jwks_uri": provider.jwks_url}  # fmt: skip
                    return self._send(200, doc)
                if url.path == "/jwks":
                    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key()))
                    return self._send(200, {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]})
                if url.path == "/authorize":
                    ok = q.get("client_id") == provider.client_id and q.get("code_challenge_method") == "S256"
                    if not ok or q.get("response_type") != "code" or "openid" not in q.get("scope", ""):
                        return self._send(400, {"error": "invalid_request"})
                    code = uuid.uuid4().hex
                    provider.challenges[code] = (q["code_challenge"], q["redirect_uri"])
                    back = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
                    return self._send(302, headers={"location": back})
                self._send(404)

            def do_POST(self) -> None:
                form = dict(parse_qsl(self.rfile.read(int(self.headers["content-length"])).decode()))
                provider.token_requests.append(form)
                challenge, redirect_uri = provider.challenges.pop(form.get("code", ""), ("", ""))
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                verified = base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
                if (
                    not verified
                    or form.get("redirect_uri") != redirect_uri
                    or form.get("client_id") != provider.client_id
                ):
                    return self._send(400, {"error": "invalid_grant"})
                claims = {"sub": provider.sub, "iss": provider.issuer, "aud": provider.client_id,
                          "exp": int(time.time()) + 300, "iat": int(time.time())}  # fmt: skip
                id_token = jwt.encode(claims, provider.key, algorithm="RS256", headers={"kid": "k1"})
                self._send(200, {"id_token": id_token, "access_token": uuid.uuid4().hex, "token_type": "Bearer"})

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.jwks_url = f"{self.issuer}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@needs_chromium
async def test_single_sign_on_with_an_openid_provider_uses_the_code_flow_with_pkce(
    browser: Browser, stack: Stack, user: str
) -> None:
    idp = FakeOpenIdProvider(client_id="agentry-console", sub=user)
    gateway = await asyncio.to_thread(
        stack.start_service, "gateway", OIDC_ISSUER=idp.issuer, OIDC_CLIENT_ID=idp.client_id,
        JWT_JWKS_URL=idp.jwks_url, JWT_ISSUER=idp.issuer, JWT_AUDIENCE=idp.client_id,
    )  # fmt: skip
    try:
        page = await browser.new_page()
        await page.goto(f"{gateway.url}/console/")
        await page.get_by_test_id("signin-oidc").click()  # → the provider → back with a code → its ID token
        await page.wait_for_selector('main[data-ready="#/endpoints"]')
        await expect(page.get_by_test_id("nav-endpoints")).to_be_visible()
        assert "code=" not in page.url  # the one-time code does not stay in the address bar
        [exchange] = idp.token_requests
        assert exchange["grant_type"] == "authorization_code" and len(exchange["code_verifier"]) >= 43
        csp = (await httpx.AsyncClient().get(f"{gateway.url}/console/")).headers["content-security-policy"]
        assert f"connect-src 'self' {idp.issuer};" in csp
        await page.close()
    finally:
        await asyncio.to_thread(gateway.stop)
        stack.services.remove(gateway)
        idp.server.shutdown()
