"""Token prices, versioned: what a run's tokens cost the platform, reported as `usage.cost_cents`.

Prices are USD per 1M tokens (input, output) from the providers' public price lists at `PRICING_VERSION`.
A model matches its exact name or the longest listed prefix (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`).
`custom` and `mock` models cost nothing: the platform does not pay for them. Changing a price means a new
`PRICING_VERSION`, so a reported cost can always be traced to the table that produced it.
"""

from __future__ import annotations

PRICING_VERSION = "2026-03-01"

PRICES: dict[str, dict[str, tuple[float, float]]] = {
    "openai": {
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4o": (2.50, 10.00),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1": (2.00, 8.00),
        "o4-mini": (1.10, 4.40),
        "o3": (2.00, 8.00),
    },
    "anthropic": {
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-haiku-4-5": (1.00, 5.00),
        "claude-opus-4": (15.00, 75.00),  # also Opus 4.1
        # Opus 4.5 and 4.6 cost a third of Opus 4; the prefix above would charge them its price.
        "claude-opus-4-5": (5.00, 25.00),
        "claude-opus-4-6": (5.00, 25.00),
    },
    "gemini": {
        "gemini-1.5-flash": (0.075, 0.30),
        "gemini-2.0-flash-lite": (0.075, 0.30),
        "gemini-2.0-flash": (0.10, 0.40),
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-pro": (1.25, 10.00),
    },
    "groq": {
        "llama-3.3-70b": (0.59, 0.79),
        "llama-3.1-8b": (0.05, 0.08),
        "gemma2-9b": (0.20, 0.20),
    },
}


def price(provider: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when the platform does not pay for this model."""
    table = PRICES.get(provider, {})
    name = model.removeprefix("models/").removeprefix(f"{provider}/")
    matches = [key for key in table if name == key or name.startswith(key)]
    return table[max(matches, key=len)] if matches else None


def cost_cents(provider: str, model: str, tokens_input: int, tokens_output: int, markup: float) -> float:
    found = price(provider, model)
    if found is None:
        return 0.0
    usd = (tokens_input * found[0] + tokens_output * found[1]) / 1_000_000
    return round(usd * 100 * markup, 6)
