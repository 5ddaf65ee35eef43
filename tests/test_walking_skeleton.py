"""Issue #2's walking skeleton, over HTTP, against the four services as separate processes on real NATS and
PostgreSQL: create a workspace and a priced mock endpoint, fund the wallet, run, and see the run billed once."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from agentry_dev.stack import Stack


async def _wait_for(predicate, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_one_priced_run_flows_through_all_four_services_and_is_billed_once(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert {s.name for s in stack.services} >= {"gateway", "runner", "billing", "keys"}
    assert len({s.proc.pid for s in stack.services if s.proc}) == len(stack.services)

    r = await http.post("/api/workspaces", json={"name": "Acme"}, headers=auth)
    assert r.status_code == 201, r.text
    workspace_id = r.json()["workspace"]["id"]

    body = {
        "name": "Invoice parser",
        "workspace_id": workspace_id,
        "system_prompt": "Parse the invoice and extract structured data.",
        "llm_provider": "mock",
        "price_per_run_cents": 5,
    }
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    endpoint_id, api_key = created["endpoint"]["id"], created["api_key"]
    assert api_key.startswith("aek_")
    assert api_key not in (await http.get(f"/api/agent-endpoints/{endpoint_id}", headers=auth)).text

    deposit_headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    r = await http.post("/api/balance/deposit", json={"amount_cents": 500}, headers=deposit_headers)
    assert r.status_code == 201, r.text
    assert (await http.get("/api/balance", headers=auth)).json()["balance_cents"] == 500

    r = await http.post(created["run_url"], json={"input": "Invoice #42: 3 widgets, $30"},
                        headers={"Authorization": f"Bearer {api_key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    result = r.json()
    run_id = result["run_id"]
    assert run_id.startswith("run_") and r.headers["X-Run-Id"] == run_id
    assert isinstance(result["output"], str) and result["output"]
    usage = result["usage"]
    assert usage["tokens_input"] > 0 and usage["tokens_output"] > 0
    assert usage["iterations"] == 1
    assert usage["latency_ms"] >= 0 and usage["cost_cents"] >= 0

    async def debited() -> dict | None:  # type: ignore[type-arg]
        balance = (await http.get("/api/balance", headers=auth)).json()
        return balance if balance["balance_cents"] != 500 else None

    balance = await _wait_for(debited)
    assert balance is not None, "the wallet was never debited"
    assert balance["balance_cents"] == 495
    assert balance["lifetime_spent_cents"] == 5 and balance["lifetime_deposited_cents"] == 500
    await asyncio.sleep(1.0)  # a second debit, if there were one, would have landed by now
    assert (await http.get("/api/balance", headers=auth)).json()["balance_cents"] == 495

    txs = (await http.get("/api/balance/transactions", headers=auth)).json()["transactions"]
    charges = [t for t in txs if t["kind"] == "run_charge"]
    assert len(charges) == 1 and charges[0]["run_id"] == run_id and abs(charges[0]["amount_cents"]) == 5

    r = await http.get(f"/api/agent-endpoints/{endpoint_id}/runs", headers=auth)
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    assert [run["id"] for run in runs] == [run_id]
    run = runs[0]
    assert run["status"] == "succeeded" and run["is_test"] is False
    assert run["tokens_input"] == usage["tokens_input"] and run["iterations"] == 1
    assert run["charge"] == {"amount_cents": 5, "status": "collected"}
