"""The `agentry` command through its real entry point (`.venv/bin/agentry`) against the whole stack."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentry_dev.stack import dev_token

pytestmark = pytest.mark.usefixtures("stack")
AGENTRY = str(Path(sys.executable).parent / "agentry")


@pytest.fixture
def env(gateway_url: str, user: str, tmp_path: Path) -> dict[str, str]:
    # Its own config directory: `agentry login` never touches the real one.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRY_")}
    return {**base, "AGENTRY_URL": gateway_url, "AGENTRY_TOKEN": dev_token(user), "XDG_CONFIG_HOME": str(tmp_path),
            "COLUMNS": "250", "NO_COLOR": "1"}  # fmt: skip


def agentry(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTRY, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    done = agentry(env, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def test_create_run_streamed_list_and_rotate_the_key(env: dict[str, str]) -> None:
    ws = ok(env, "workspaces", "create", "Acme", "--json")["id"]
    created = ok(env, "endpoints", "create", "--workspace", ws, "--name", "Bot", "--prompt", "Be useful.",
                 "--provider", "mock", "--streaming", "--set", "max_tool_calls=3", "--json")  # fmt: skip
    endpoint, key = created["endpoint"], created["api_key"]
    assert endpoint["enable_streaming"] is True and endpoint["max_tool_calls"] == 3
    assert endpoint["slug"] in ok(env, "endpoints")  # the table

    streamed = agentry(env, "run", endpoint["slug"], "hello", "--stream", "--key", key)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == "mock answer: hello\n" and "thinking" in streamed.stderr
    from_stdin = agentry({**env, "AGENTRY_API_KEY": key}, "run", endpoint["slug"], stdin="from stdin")
    assert from_stdin.stdout == "mock answer: from stdin\n"

    runs = ok(env, "runs", endpoint["id"], "--json")
    assert len(runs) == 2 and all(r["status"] == "succeeded" for r in runs)
    table = ok(env, "runs", endpoint["id"])
    assert all(r["id"] in table for r in runs)

    new_key = ok(env, "keys", "regenerate", endpoint["id"], "--json")["api_key"]
    refused = agentry(env, "run", endpoint["slug"], "hi", "--key", key)
    assert refused.returncode == 1 and "invalid API key" in refused.stderr and "invalid_api_key" in refused.stderr
    assert ok(env, "run", endpoint["slug"], "hi", "--key", new_key, "--json")["output"] == "mock answer: hi"


def refused_run(env: dict[str, str], slug: str, key: str) -> subprocess.CompletedProcess[str]:
    """A run with a key just revoked: the contract gives every gateway up to a second to refuse it."""
    deadline = time.monotonic() + 10
    while (done := agentry(env, "run", slug, "hi", "--key", key)).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return done


def test_a_second_key_runs_is_filtered_in_history_and_fails_once_revoked(env: dict[str, str], gateway_url: str) -> None:
    ws = ok(env, "workspaces", "create", "Acme", "--json")["id"]
    created = ok(env, "endpoints", "create", "--workspace", ws, "--name", "Bot", "--prompt", "x", "--provider",
                 "mock", "--json")  # fmt: skip
    endpoint, slug = created["endpoint"]["id"], created["endpoint"]["slug"]
    second = ok(env, "keys", "create", endpoint, "--name", "acme app", "--rate-limit", "50", "--json")
    key_id, raw = second["key"]["id"], second["api_key"]
    assert key_id.startswith("key_") and raw.startswith(second["key"]["prefix"]) and second["key"]["revoked_at"] is None

    run = ok(env, "run", slug, "from acme", "--key", raw, "--json")
    assert run["output"] == "mock answer: from acme"
    ok(env, "run", slug, "from default", "--key", created["api_key"])
    assert [r["id"] for r in ok(env, "runs", endpoint, "--key-id", key_id, "--json")] == [run["run_id"]]
    assert ok(env, "runs", endpoint, "--json")[0]["key_id"] != key_id

    updated = ok(env, "keys", "update", endpoint, key_id, "--spend-cap", "500", "--cap-period", "day", "--json")
    assert (updated["spend_cap_cents"], updated["spend_cap_period"], updated["name"]) == (500, "day", "acme app")
    table = ok(env, "keys", "list", endpoint)
    assert "default" in table and "acme app" in table and raw not in table  # the raw key is shown only once

    ok(env, "keys", "revoke", endpoint, key_id)
    listed = {k["id"]: k for k in ok(env, "keys", "list", endpoint, "--json")}
    assert listed[key_id]["revoked_at"] is not None  # kept, for audit
    refused = refused_run(env, slug, raw)
    expected = httpx.post(
        f"{gateway_url}/api/run/{slug}", json={"input": "x"}, headers={"Authorization": f"Bearer {raw}"}
    )
    assert expected.status_code == 401 and expected.json()["error"]["code"] == "invalid_api_key"
    assert refused.returncode == 1 and expected.json()["error"]["message"] in refused.stderr
    assert "invalid_api_key" in refused.stderr and refused.stdout == ""
    assert ok(env, "run", slug, "still", "--key", created["api_key"]) == "mock answer: still\n"  # the other key works
    assert agentry(env, "keys", "revoke", endpoint, "key_nope").returncode == 1
    assert agentry(env, "keys", "update", endpoint, key_id).returncode == 2  # nothing to change


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A webhook receiver on loopback: its URL and the headers of what it received."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_webhooks_create_list_test_deliveries_and_delete(
    env: dict[str, str], receiver: tuple[str, list[dict[str, str]]]
) -> None:
    url, received = receiver
    created = ok(env, "webhooks", "create", url, "--event", "run.succeeded", "--event", "balance.low",
                 "--description", "ops", "--json")  # fmt: skip
    hook = created["webhook"]
    assert created["secret"].startswith("whsec_") and hook["events"] == ["run.succeeded", "balance.low"]
    assert [h["id"] for h in ok(env, "webhooks", "list", "--json")] == [hook["id"]]
    table = ok(env, "webhooks")
    assert hook["id"] in table and url in table and created["secret"] not in table  # the secret only once

    sent = ok(env, "webhooks", "test", hook["id"], "--json")
    assert sent["event_type"] == "webhook.test" and sent["webhook_id"] == hook["id"]
    deadline = time.monotonic() + 60
    while (found := ok(env, "webhooks", "deliveries", hook["id"], "--json"))[0]["status"] == "pending":
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    assert found[0]["status"] == "succeeded" and found[0]["attempts"][0]["response_status"] == 204
    assert (
        received and received[0]["webhook-id"] == found[0]["id"] and received[0]["webhook-signature"].startswith("v1,")
    )
    assert "succeeded" in ok(env, "webhooks", "deliveries", hook["id"])  # the table
    retried = ok(env, "webhooks", "retry", hook["id"], found[0]["id"], "--json")
    assert retried["id"] == found[0]["id"]

    ok(env, "webhooks", "delete", hook["id"])
    assert ok(env, "webhooks", "list", "--json") == []
    missing = agentry(env, "webhooks", "deliveries", hook["id"])
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_follow_prints_new_runs_as_they_come(env: dict[str, str]) -> None:
    ws = ok(env, "workspaces", "create", "Acme", "--json")["id"]
    created = ok(env, "endpoints", "create", "--workspace", ws, "--name", "Bot", "--prompt", "x", "--provider",
                 "mock", "--json")  # fmt: skip
    args = [AGENTRY, "runs", created["endpoint"]["id"], "--follow", "--json", "--interval", "0.3", "--for", "8"]
    follower = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        run = ok(env, "run", created["endpoint"]["slug"], "late", "--key", created["api_key"], "--json")
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [run["run_id"]]


def test_the_wallet_and_usage(env: dict[str, str]) -> None:
    assert "balance 5.00 USD" in ok(env, "deposit", "5")
    assert ok(env, "balance", "--json")["balance_cents"] == 500
    assert "5.00 USD" in ok(env, "balance")
    assert ok(env, "transactions", "--json")[0]["amount_cents"] == 500
    [deposit] = ok(env, "deposits", "--json")
    assert (deposit["amount_cents"], deposit["status"], deposit["source"]) == (500, "succeeded", "manual")
    assert deposit["id"] in ok(env, "deposits")
    ws = ok(env, "workspaces", "create", "Acme", "--json")["id"]
    created = ok(env, "endpoints", "create", "--workspace", ws, "--name", "Metered", "--prompt", "x", "--provider",
                 "mock", "--json")  # fmt: skip
    ok(env, "run", created["endpoint"]["slug"], "count me", "--key", created["api_key"], "--json")
    deadline = time.monotonic() + 60  # billing counts the run as it consumes run.completed
    while (report := ok(env, "usage", "--json"))["totals"]["runs"] < 1:
        assert time.monotonic() < deadline, report
        time.sleep(0.3)
    assert report["totals"]["succeeded"] == 1 and len(report["buckets"]) == 1
    table = ok(env, "usage", "--by", "endpoint")
    assert created["endpoint"]["id"] in table and "runs" in table
    as_csv = ok(env, "usage", "--csv").splitlines()
    assert "runs" in as_csv[0] and len(as_csv) == 2  # the server's CSV: a header and the one bucket


def test_a_bad_token_shows_the_apis_message_and_exits_1(env: dict[str, str], gateway_url: str) -> None:
    expected = httpx.get(f"{gateway_url}/api/workspaces", headers={"Authorization": "Bearer nope"}).json()["error"]
    done = agentry({**env, "AGENTRY_TOKEN": "nope"}, "workspaces")
    assert done.returncode == 1 and expected["message"] in done.stderr and expected["code"] in done.stderr


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert agentry(env, "deposit", "five").returncode == 2
    assert agentry(env, "usage", "--by", "planet").returncode == 2
    unsigned = {k: v for k, v in env.items() if k != "AGENTRY_TOKEN"}
    done = agentry(unsigned, "workspaces")
    assert done.returncode == 2 and "agentry login" in done.stderr


def test_login_keeps_the_token_in_a_private_file(env: dict[str, str], gateway_url: str, tmp_path: Path) -> None:
    token = env["AGENTRY_TOKEN"]
    unsigned = {k: v for k, v in env.items() if k not in ("AGENTRY_TOKEN", "AGENTRY_URL")}
    assert agentry(unsigned, "login", "--url", gateway_url, "--token", "nope").returncode == 1  # checked first
    assert not (tmp_path / "agentry" / "config.json").exists()
    ok(unsigned, "login", "--url", gateway_url, "--token", token)
    saved = tmp_path / "agentry" / "config.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert ok(unsigned, "workspaces", "--json") == []
