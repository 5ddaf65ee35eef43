"""Properties of the token-cost arithmetic (pricing.py) over generated token counts, markups and model names; the
worked examples are in test_pricing.py."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from agentry_runner.pricing import PRICES, cost_cents, price

PRICED = [(provider, model) for provider, table in PRICES.items() for model in table]
tokens = st.integers(min_value=0, max_value=10**9)
markups = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)
priced = st.sampled_from(PRICED)
suffixes = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", max_size=20)


@given(priced, tokens, tokens, markups)
def test_cost_is_tokens_at_the_listed_price_with_the_markup_in_cents_to_six_places(
    model: tuple[str, str], tokens_in: int, tokens_out: int, markup: float
) -> None:
    per_in, per_out = PRICES[model[0]][model[1]]
    cost = cost_cents(*model, tokens_in, tokens_out, markup)
    assert math.isfinite(cost) and cost >= 0
    assert cost == round((tokens_in * per_in + tokens_out * per_out) / 1_000_000 * 100 * markup, 6)


@given(priced, tokens, tokens, st.integers(min_value=0, max_value=10**6), markups)
def test_more_tokens_never_cost_less(
    model: tuple[str, str], tokens_in: int, tokens_out: int, more: int, markup: float
) -> None:
    cost = cost_cents(*model, tokens_in, tokens_out, markup)
    assert cost_cents(*model, tokens_in + more, tokens_out, markup) >= cost
    assert cost_cents(*model, tokens_in, tokens_out + more, markup) >= cost


@given(priced, tokens, tokens, tokens, tokens)
def test_two_calls_cost_what_their_tokens_cost_together_up_to_rounding(
    model: tuple[str, str], in_a: int, out_a: int, in_b: int, out_b: int
) -> None:
    # A run's cost summed over its LLM calls must not drift from the cost of its total tokens.
    apart = cost_cents(*model, in_a, out_a, 1.0) + cost_cents(*model, in_b, out_b, 1.0)
    together = cost_cents(*model, in_a + in_b, out_a + out_b, 1.0)
    assert math.isclose(apart, together, rel_tol=1e-9, abs_tol=2e-6)


@given(priced, tokens, tokens, st.floats(min_value=0, max_value=10, allow_nan=False))
def test_the_markup_scales_the_cost_and_none_makes_it_free(
    model: tuple[str, str], tokens_in: int, tokens_out: int, factor: float
) -> None:
    base = cost_cents(*model, tokens_in, tokens_out, 1.0)
    assert math.isclose(cost_cents(*model, tokens_in, tokens_out, factor), base * factor, rel_tol=1e-9,
                        abs_tol=1e-6 * (1 + factor))  # fmt: skip
    assert cost_cents(*model, tokens_in, tokens_out, 0.0) == 0.0


@given(st.sampled_from(["mock", "custom", "no-such-provider"]), st.text(max_size=40), tokens, tokens, markups)
def test_models_the_platform_does_not_pay_for_always_cost_zero(
    provider: str, model: str, tokens_in: int, tokens_out: int, markup: float
) -> None:
    assert cost_cents(provider, model, tokens_in, tokens_out, markup) == 0.0


@given(priced, suffixes)
def test_a_model_name_takes_the_price_of_its_longest_listed_prefix(model: tuple[str, str], suffix: str) -> None:
    provider, listed = model
    name = listed + suffix
    longest = max((key for key in PRICES[provider] if name.startswith(key)), key=len)
    assert price(provider, name) == PRICES[provider][longest]
    # Provider-qualified spellings price the same as the bare name.
    assert price(provider, f"models/{name}") == price(provider, f"{provider}/{name}") == price(provider, name)
