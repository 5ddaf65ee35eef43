"""Metric labels stay few whatever callers send: models are labelled by their price-list name, and free-text
model names only up to a bound."""

from __future__ import annotations

import uuid

import pytest

from agentry_runner import metrics


def test_a_listed_model_is_labelled_by_its_price_list_name() -> None:
    assert metrics.model_label("openai", "gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert metrics.model_label("gemini", "models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert metrics.model_label("openai", "gpt-4o") == "gpt-4o"


def test_unlisted_model_names_are_kept_up_to_a_bound_then_labelled_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_unlisted", set())
    names = [f"custom-{uuid.uuid4().hex}" for _ in range(metrics.MAX_UNLISTED_MODELS + 5)]
    labels = [metrics.model_label("custom", name) for name in names]
    assert set(labels) - set(names) == {metrics.OTHER_MODEL}
    assert len(set(labels)) <= metrics.MAX_UNLISTED_MODELS + 1
    kept = next(label for label in labels if label != metrics.OTHER_MODEL)
    assert metrics.model_label("custom", kept) == kept  # a name already seen keeps its label
