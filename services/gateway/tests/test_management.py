"""Management API over HTTP against the running services: validation, defaults, ownership, lifecycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]

pytestmark = pytest.mark.usefixtures("stack")

BAD_FIELDS: list[tuple[str, Any]] = [
    ("price_per_run_cents", -1),
    ("price_per_run_cents", 10001),
    ("price_per_run_cents", "5"),
    ("price_per_run_cents", 5.5),
    ("price_per_run_cents", None),
    ("price_per_run_cents", True),
    ("temperature", 2.5),
    ("temperature", -0.1),
    ("temperature", "0.3"),
    ("output_format", "yaml"),
    ("agent_type", "wizard"),
    ("llm_provider", "skynet"),
    ("auth_mode", "open"),
    ("max_tokens", 99),
    ("max_tokens", 32769),
    ("max_tool_calls", 0),
    ("max_tool_calls", 51),
    ("timeout_ms", 999),
    ("timeout_ms", 300001),
    ("name", ""),
    ("name", "x" * 101),
    ("system_prompt", ""),
    ("system_prompt", "x" * 10001),
    ("description", "x" * 501),
    ("slug", "Not A Slug"),
    ("slug", "a" * 61),
    ("llm_model", "m" * 101),
    ("enable_streaming", "yes"),
    ("input_schema", {"type": "not-a-type"}),
    ("llm_base_url", "ftp://example.com"),
    ("unknown_field", 1),
]


async def _endpoint_count(http: httpx.AsyncClient, auth: dict[str, str]) -> int:
    r = await http.get("/api/agent-endpoints", headers=auth)
    return len(r.json()["endpoints"])


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
async def test_create_rejects_bad_field_with_422_naming_it_and_writes_nothing(
    http: httpx.AsyncClient, auth: dict[str, str], workspace: dict[str, Any], field: str, value: Any
) -> None:
    body = {"name": "ok", "workspace_id": workspace["id"], "system_prompt": "p", field: value}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert await _endpoint_count(http, auth) == 0


@pytest.mark.parametrize(("field", "value"), [fv for fv in BAD_FIELDS if fv[0] not in ("name", "unknown_field")])
async def test_patch_rejects_bad_field_the_same_way_and_changes_nothing(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory, field: str, value: Any
) -> None:
    created = await make_endpoint()
    url = f"/api/agent-endpoints/{created['endpoint']['id']}"
    r = await http.patch(url, json={field: value}, headers=auth)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    after = (await http.get(url, headers=auth)).json()["endpoint"]
    assert after == created["endpoint"]


async def test_create_fills_every_default_and_never_returns_the_llm_key(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint(llm_api_key="sk-test-secret-defaults")
    ep = created["endpoint"]
    assert created["api_key"].startswith("aek_") and len(created["api_key"]) >= 36
    assert created["run_url"] == f"/api/run/{ep['slug']}"
    assert ep["api_key_prefix"] == created["api_key"][: len(ep["api_key_prefix"])]
    assert ep["slug"].startswith("invoice-parser")
    expected = {
        "description": None, "agent_type": "extractor", "llm_model": "gpt-4o-mini", "max_tokens": 4096,
        "temperature": 0.3, "input_schema": None, "output_schema": None, "output_format": "text",
        "max_tool_calls": 10, "timeout_ms": 30000, "enable_streaming": False, "async_mode": False,
        "auth_mode": "api_key", "price_per_run_cents": 0, "status": "active", "has_llm_api_key": True,
    }  # fmt: skip
    assert {k: ep[k] for k in expected} == expected
    assert "llm_api_key" not in ep
    listed = (await http.get("/api/agent-endpoints", headers=auth)).text
    assert "sk-test-secret-defaults" not in listed and created["api_key"] not in listed


async def test_slugs_are_derived_unique_and_an_explicit_taken_slug_is_409(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    a = (await make_endpoint(name="Same Name"))["endpoint"]["slug"]
    b = (await make_endpoint(name="Same Name"))["endpoint"]["slug"]
    assert a != b and b.startswith(a)
    r = await http.post(
        "/api/agent-endpoints",
        json={"name": "x", "workspace_id": (await make_endpoint())["endpoint"]["workspace_id"],
              "system_prompt": "p", "slug": a},
        headers=auth,
    )  # fmt: skip
    assert r.status_code == 409 and r.json()["error"]["code"] == "slug_taken"


async def test_patch_is_partial_and_null_llm_key_removes_it(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    ep = (await make_endpoint(llm_api_key="sk-test-secret-patch", price_per_run_cents=5))["endpoint"]
    url = f"/api/agent-endpoints/{ep['id']}"
    r = await http.patch(url, json={"temperature": 1, "description": "hi"}, headers=auth)
    assert r.status_code == 200, r.text
    after = r.json()["endpoint"]
    assert after["temperature"] == 1 and after["description"] == "hi"
    assert after["price_per_run_cents"] == 5 and after["has_llm_api_key"] is True
    r = await http.patch(url, json={"llm_api_key": None}, headers=auth)
    assert r.json()["endpoint"]["has_llm_api_key"] is False


async def test_custom_provider_needs_a_base_url_also_when_patched(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    ep = (await make_endpoint())["endpoint"]
    r = await http.patch(f"/api/agent-endpoints/{ep['id']}", json={"llm_provider": "custom"}, headers=auth)
    assert r.status_code == 422 and "llm_base_url" in r.json()["error"]["message"]


async def test_endpoint_in_someone_elses_workspace_is_404(
    http: httpx.AsyncClient, make_auth: Any, workspace: dict[str, Any]
) -> None:
    body = {"name": "x", "workspace_id": workspace["id"], "system_prompt": "p"}
    r = await http.post("/api/agent-endpoints", json=body, headers=make_auth("intruder"))
    assert r.status_code == 404


async def test_cross_user_access_answers_404_on_every_route_with_an_id(
    http: httpx.AsyncClient, make_auth: Any, make_endpoint: EndpointFactory, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    ep_id, ws_id = created["endpoint"]["id"], created["endpoint"]["workspace_id"]
    r = await http.post(f"/api/workspaces/{ws_id}/servers", json={"name": "t", "url": "http://127.0.0.1:1/mcp"},
                        headers=auth)  # fmt: skip
    assert r.status_code == 201, r.text
    srv_id = r.json()["server"]["id"]
    other = make_auth("someone-else")
    routes = [
        ("GET", f"/api/workspaces/{ws_id}", None),
        ("DELETE", f"/api/workspaces/{ws_id}", None),
        ("GET", f"/api/workspaces/{ws_id}/servers", None),
        ("POST", f"/api/workspaces/{ws_id}/servers", {"name": "x", "url": "http://127.0.0.1:1/"}),
        ("GET", f"/api/workspaces/{ws_id}/servers/{srv_id}", None),
        ("DELETE", f"/api/workspaces/{ws_id}/servers/{srv_id}", None),
        ("GET", f"/api/agent-endpoints/{ep_id}", None),
        ("PATCH", f"/api/agent-endpoints/{ep_id}", {"name": "stolen"}),
        ("DELETE", f"/api/agent-endpoints/{ep_id}", None),
        ("POST", f"/api/agent-endpoints/{ep_id}/regenerate-key", None),
        ("POST", f"/api/agent-endpoints/{ep_id}/test", {"input": "hi"}),
        ("GET", f"/api/agent-endpoints/{ep_id}/runs", None),
    ]
    for method, url, body in routes:
        r = await http.request(method, url, json=body, headers=other)
        assert r.status_code == 404, (method, url, r.text)
    assert (await http.get(f"/api/agent-endpoints/{ep_id}", headers=auth)).json()["endpoint"]["name"] != "stolen"


async def test_missing_invalid_or_expired_token_is_401(http: httpx.AsyncClient) -> None:
    import time

    import jwt

    from agentry_gateway.settings import DEV_JWT_SECRET

    expired = jwt.encode({"sub": "u", "exp": int(time.time()) - 10}, DEV_JWT_SECRET, algorithm="HS256")
    forged = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "wrong-secret", algorithm="HS256")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {expired}"},
                    {"Authorization": f"Bearer {forged}"}):  # fmt: skip
        r = await http.get("/api/workspaces", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] in ("unauthorized", "invalid_token", "token_expired")


async def test_workspace_with_endpoints_cannot_be_deleted(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    ep = (await make_endpoint())["endpoint"]
    r = await http.delete(f"/api/workspaces/{ep['workspace_id']}", headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "workspace_not_empty"
    assert (await http.delete(f"/api/agent-endpoints/{ep['id']}", headers=auth)).status_code == 204
    assert (await http.delete(f"/api/workspaces/{ep['workspace_id']}", headers=auth)).status_code == 204


async def test_deleted_endpoint_runs_answer_404(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint()
    assert (await http.delete(f"/api/agent-endpoints/{created['endpoint']['id']}", headers=auth)).status_code == 204
    r = await http.post(created["run_url"], json={"input": "x"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 404


async def test_disabled_endpoint_runs_answer_403(
    http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint()
    url = f"/api/agent-endpoints/{created['endpoint']['id']}"
    assert (await http.patch(url, json={"status": "disabled"}, headers=auth)).status_code == 200
    r = await http.post(created["run_url"], json={"input": "x"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "endpoint_disabled"


async def test_mcp_server_headers_are_never_returned(http: httpx.AsyncClient, auth: dict[str, str],
                                                     workspace: dict[str, Any]) -> None:  # fmt: skip
    body = {
        "name": "Tools",
        "url": "http://127.0.0.1:9/mcp",
        "headers": {"Authorization": "Bearer sk-test-secret-mcp"},
    }
    r = await http.post(f"/api/workspaces/{workspace['id']}/servers", json=body, headers=auth)
    assert r.status_code == 201
    srv = r.json()["server"]
    assert srv["slug"] == "tools" and srv["header_names"] == ["Authorization"]
    listed = await http.get(f"/api/workspaces/{workspace['id']}/servers", headers=auth)
    assert "sk-test-secret-mcp" not in r.text + listed.text


async def test_a_body_that_is_not_utf8_is_a_bad_body_422(http, auth) -> None:  # type: ignore[no-untyped-def]
    r = await http.post(
        "/api/workspaces", content=b'{"name": "\xff"}', headers={**auth, "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error" and "UTF-8" in r.json()["error"]["message"]
