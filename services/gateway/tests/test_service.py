"""Catalog rules over HTTP that fuzzing (tools/fuzz.py) found broken: each answered 500 before its fix."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("stack")

# Hosts without an IDNA form: the resolver raised UnicodeError, not OSError, and the gateway answered 500.
UNENCODABLE_HOSTS = ["http://a..b/mcp", "http://./", f"http://{'a' * 64}.example/", "http://\x87/"]


@pytest.mark.parametrize("url", UNENCODABLE_HOSTS)
async def test_a_user_url_whose_host_has_no_idna_form_is_refused_with_422(
    http: httpx.AsyncClient, auth: dict[str, str], url: str
) -> None:
    ws = (await http.post("/api/workspaces", json={"name": "urls"}, headers=auth)).json()["workspace"]["id"]
    r = await http.post(f"/api/workspaces/{ws}/servers", json={"name": "t", "url": url}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_not_allowed", r.text
    body = {"name": "c", "workspace_id": ws, "system_prompt": "p", "llm_provider": "custom", "llm_base_url": url}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("llm_base_url: "), r.text
