from __future__ import annotations

from pydantic import Field, SecretStr

from agentry_common.settings import ServiceSettings


class Settings(ServiceSettings):
    # --- consuming run.requested ---
    runner_concurrency: int = Field(64, ge=1, description="Runs executed at once by one process (I/O bound).")
    runner_ack_wait_s: float = Field(
        15.0, gt=0, description="JetStream ack wait; a run whose runner died is redelivered after this long."
    )
    runner_max_deliveries: int = Field(
        3,
        ge=2,
        description="Delivery on which a run that keeps interrupting its runner is recorded failed instead of run.",
    )
    runner_record_retry_s: float = Field(
        300.0,
        ge=0,
        description="How long a run's database statements retry through an outage before it is handed back.",
    )
    runner_shutdown_grace_s: float = Field(
        10.0, ge=0, description="On shutdown, how long in-flight runs may finish before they are handed back."
    )

    # --- LLM providers (platform keys; an endpoint's own key wins) ---
    openai_base_url: str = Field("https://api.openai.com/v1", description="OpenAI API base URL.")
    openai_api_key: SecretStr | None = Field(None, description="Platform OpenAI key.")
    groq_base_url: str = Field("https://api.groq.com/openai/v1", description="Groq (OpenAI-compatible) base URL.")
    groq_api_key: SecretStr | None = Field(None, description="Platform Groq key.")
    anthropic_base_url: str = Field("https://api.anthropic.com", description="Anthropic API base URL.")
    anthropic_api_key: SecretStr | None = Field(None, description="Platform Anthropic key.")
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com", description="Gemini (Generative Language API) base URL."
    )
    gemini_api_key: SecretStr | None = Field(None, description="Platform Gemini key.")
    custom_api_key: SecretStr | None = Field(
        None, description="Key sent to `custom` base URLs when the endpoint has none (most self-hosted need none)."
    )
    llm_timeout_s: float = Field(120.0, gt=0, description="One LLM HTTP call may take this long (→ llm_timeout).")
    llm_max_retries: int = Field(3, ge=0, description="Retries of a 429 / 5xx answer, within the run's deadline.")
    llm_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles on each retry.")

    # --- secrets (BYO LLM keys, MCP headers) ---
    secret_cache_ttl_s: float = Field(
        60.0,
        ge=0,
        description="How long a resolved secret stays in memory (0: resolve for every run; runs starting together "
        "share one resolution). A changed or deleted secret is never used after the change was acknowledged, "
        "whatever this is (see `secret_cache`).",
    )
    secret_cache_size: int = Field(10_000, ge=1, description="At most this many resolved secrets in memory.")

    # --- tools, cost, safety ---
    tool_timeout_s: float = Field(60.0, gt=0, description="One MCP tool call may take this long.")
    mcp_tools_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        description="How long an MCP server's tool definitions are reused by later runs without asking it again "
        "(0: list every server for every run). A changed URL, headers secret or header value is a new entry at "
        "once; a workspace's `catalog.changed` drops its entries.",
    )
    mcp_tools_cache_size: int = Field(1_000, ge=1, description="At most this many servers' tool lists in memory.")
    platform_markup: float = Field(1.0, ge=0, description="Multiplier applied to provider token prices.")
    allow_private_urls: bool = Field(
        False, description="Let MCP and `custom` URLs reach private/loopback addresses (development, tests)."
    )


settings = Settings()
