"""Token cost from the versioned price table, with the platform markup; free for custom and mock."""

from __future__ import annotations

from agentry_runner.pricing import cost_cents, price


def test_cost_is_tokens_times_price_per_million_times_markup_in_cents():
    # gpt-4o-mini: $0.15 in / $0.60 out per 1M tokens
    assert cost_cents("openai", "gpt-4o-mini", 1_000_000, 0, 1.0) == 15.0
    assert cost_cents("openai", "gpt-4o-mini", 1245, 189, 1.0) == round((1245 * 0.15 + 189 * 0.60) / 1e4, 6)
    assert cost_cents("openai", "gpt-4o-mini", 1245, 189, 1.5) == round((1245 * 0.15 + 189 * 0.60) / 1e4 * 1.5, 6)


def test_dated_model_names_match_their_family_and_the_longest_prefix_wins():
    assert price("openai", "gpt-4o-mini-2024-07-18") == price("openai", "gpt-4o-mini")
    assert price("openai", "gpt-4o-2024-08-06") == (2.50, 10.00)
    assert price("anthropic", "claude-sonnet-4-20250514") == (3.00, 15.00)
    assert price("anthropic", "claude-opus-4-1-20250805") == (15.00, 75.00)
    assert price("anthropic", "claude-opus-4-5-20251101") == (5.00, 25.00)  # not Opus 4's price
    assert price("anthropic", "claude-haiku-4-5-20251001") == (1.00, 5.00)
    assert price("gemini", "models/gemini-2.0-flash") == (0.10, 0.40)
    assert price("groq", "llama-3.3-70b-versatile") == (0.59, 0.79)


def test_models_the_platform_does_not_pay_for_cost_nothing():
    assert cost_cents("mock", "mock-1", 1000, 1000, 2.0) == 0.0
    assert cost_cents("custom", "llama3", 1000, 1000, 2.0) == 0.0
    assert cost_cents("openai", "some-future-model", 1000, 1000, 1.0) == 0.0
