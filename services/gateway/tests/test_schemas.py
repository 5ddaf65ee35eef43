"""JSON the platform cannot carry (NUL, unpaired surrogates, NaN/Infinity, integers beyond 64 bits) is refused at
the edge with a 422.

Found by fuzzing (tools/fuzz.py): a run input holding "\\u0000" was accepted, could never be recorded (JSONB
refuses it) and was redelivered forever, so its caller got a 504 — or, on an async endpoint, a 202 for a run
that never ends; an integer beyond 64 bits failed the run as "interrupted" (500) after three deliveries. Names,
prompts, schemas, ids in the path and cursors in the query answered 500 the same way.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agentry_gateway.schemas import EndpointUpdate, RunBody, WorkspaceCreate, unstorable

BAD_TEXT = ["a\x00b", "\ud800", "x\udfffy"]
BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), 2**64, -(2**63) - 1, 10**30]


@pytest.mark.parametrize("text", BAD_TEXT)
def test_nul_and_lone_surrogates_are_found_at_any_depth_and_in_keys(text: str) -> None:
    assert unstorable(text)
    assert unstorable({"a": [1, {"b": text}]})
    assert unstorable({text: 1})


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_non_finite_numbers_and_integers_beyond_64_bits_are_found_at_any_depth(number: float) -> None:
    assert unstorable(number) and unstorable({"a": [{"b": number}]})


def test_ordinary_json_is_storable() -> None:
    limits = [2**64 - 1, -(2**63), 1e308, -0.0, True, None]
    assert not unstorable({"café": ["😀", 1, None, 2.5, {"k": "\t\n"}, *limits]})


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (RunBody, {"input": "x\x00"}, "input"),
        (RunBody, {"input": {"nested": ["\ud800"]}}, "input"),
        (WorkspaceCreate, {"name": "a\x00"}, "name"),
        (EndpointUpdate, {"output_schema": {"description": "\x00"}}, "output_schema"),
        (EndpointUpdate, {"output_schema": {"maximum": float("nan")}}, "output_schema"),
        (RunBody, {"input": {"n": 10**30}}, "input"),
    ],
)
def test_a_body_with_unstorable_text_names_the_field(model: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(body)
    assert f"{field}: must not contain NUL" in str(raised.value)


def test_an_unstorable_field_name_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as raised:
        WorkspaceCreate.model_validate({"name": "ok", "x\x00": 1})
    assert "field names must not contain NUL" in str(raised.value) and "\x00" not in str(raised.value)


@pytest.mark.usefixtures("stack")
async def test_run_input_path_ids_and_query_values_with_nul_answer_422(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ws = (await http.post("/api/workspaces", json={"name": "nul"}, headers=auth)).json()["workspace"]["id"]
    body = {"name": "nul", "workspace_id": ws, "system_prompt": "p", "llm_provider": "mock", "async_mode": True}
    created = (await http.post("/api/agent-endpoints", json=body, headers=auth)).json()
    key = {"X-API-Key": created["api_key"]}

    for raw in (
        b'{"input": {"text": "a\\u0000b"}}',
        b'{"input": {"n": NaN}}',
        b'{"input": {"n": [123456789012345678901]}}',
    ):
        r = await http.post(created["run_url"], content=raw, headers={**key, "content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("input: "), (raw, r.text)
    for method, path, params in [
        ("GET", f"/api/workspaces/{ws}%00", None),
        ("GET", f"/api/agent-endpoints/{created['endpoint']['id']}/runs", {"cursor": "a\x00"}),
        ("GET", "/api/agent-endpoints", {"workspace_id": "\x00"}),
    ]:
        r = await http.request(method, path, params=params, headers=auth)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", (path, r.text)
    # The endpoint still runs what it can store.
    r = await http.post(created["run_url"], json={"input": {"text": "café 😀"}}, headers=key)
    assert r.status_code == 202, r.text
