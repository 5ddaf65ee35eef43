from __future__ import annotations

from pydantic import Field, model_validator

from agentry_common.settings import ServiceSettings

# The development default: `make token` (agentry_dev) signs with it; production refuses it.
DEV_JWT_SECRET = "agentry-development-jwt-secret-not-for-production"  # noqa: S105 - development default


class Settings(ServiceSettings):
    jwt_secret: str = Field(DEV_JWT_SECRET, description="HS256 secret for management JWTs.")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL (RS256/ES256); used instead of the secret.")
    jwt_issuer: str | None = Field(None, description="Required `iss` claim, when set.")
    jwt_audience: str | None = Field(None, description="Required `aud` claim, when set.")
    oidc_issuer: str | None = Field(
        None,
        description="The console's single sign-on: an OpenID provider (authorization code + PKCE). Set "
        "JWT_JWKS_URL, JWT_ISSUER and JWT_AUDIENCE (= OIDC_CLIENT_ID) so its ID tokens are accepted.",
    )
    oidc_client_id: str | None = Field(None, description="The console's public client id at the OpenID provider.")
    oidc_scope: str = Field("openid profile email", description="Scopes the console asks the OpenID provider for.")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    allow_private_urls: bool = Field(
        False, description="Let MCP / custom LLM URLs reach private and loopback addresses (never link-local)."
    )
    trusted_proxies: str = Field(
        "", description="CIDRs whose X-Forwarded-For is believed, comma-separated (empty: none)."
    )
    rate_limit_per_endpoint: int = Field(60, ge=1, description="Runs per endpoint per window, every auth mode.")
    rate_limit_per_client_ip: int = Field(
        20, ge=1, description="Runs per client IP (IPv6: per /64) per endpoint per window; public endpoints only."
    )
    rate_limit_test_runs: int = Field(10, ge=1, description="Owner test runs (`/test`) per endpoint per window.")
    rate_limit_window_s: float = Field(60.0, gt=0, le=86400, description="Length of the sliding window, seconds.")
    rate_limit_fail_open: bool = Field(
        False, description="Admit runs unchecked when the limiter (NATS) is unreachable, instead of answering 503."
    )
    rate_limit_timeout_s: float = Field(2.0, gt=0, description="How long a limiter decision may wait for NATS.")
    tool_list_timeout_s: float = Field(
        5.0, gt=0, le=60, description="How long listing an MCP server's tools may take (then 502)."
    )
    key_cache_ttl_s: float = Field(30.0, ge=0, description="How long a verified API key is cached (backstop).")
    key_use_flush_s: float = Field(5.0, gt=0, description="How often key uses are reported (for `last_used_at`).")
    catalog_cache_ttl_s: float = Field(5.0, ge=0, description="How long an endpoint's config is cached.")
    run_wait_grace_s: float = Field(5.0, ge=0, description="Extra wait beyond an endpoint's timeout_ms.")
    async_run_ttl_s: int = Field(7 * 24 * 3600, description="How long an async run's id is remembered.")

    @model_validator(mode="after")
    def _no_default_secrets(self) -> Settings:
        if not self.jwt_jwks_url:
            self.refuse_default("JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET)
        return self


settings = Settings()
