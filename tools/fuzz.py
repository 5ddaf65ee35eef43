"""`make fuzz`: schemathesis over the gateway's `/openapi.json` — every route, with valid credentials.

For each operation it draws requests from three schemathesis strategies: valid data with real ids and the
caller's credentials (a development JWT, an admin JWT for admin routes, the endpoint's API key for runs),
valid data with generated ids, and invalid data (negative mode). Each response is checked: no 5xx, the body
matches the schema declared for its status, the content type is the declared one, invalid data is refused
with a 4xx. Destructive calls (DELETE, regenerate-key, PATCH) get resources of their own, so the run endpoint
the fuzzer calls keeps its key and configuration.

    python -m tools.fuzz --max-examples 300      # starts its own stack; make fuzz
The last line is one JSON object: `requests`, `server_errors`, `schema_violations`, `failures`, …
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from agentry_dev.stack import Stack, dev_token, free_port

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, negative_data_rejection]
# Invalid data is rejected with any 4xx the contract names: schemathesis's list, plus 413 for a body that breaks a
# `maxItems` by being larger than the gateway's body limit (1001 junk chat messages), which is refused before it
# is parsed.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]}}}
)
# A fuzz run must not be throttled into testing only the 429 answer.
GATEWAY_ENV = {"RATE_LIMIT_PER_ENDPOINT": "1000000", "RATE_LIMIT_TEST_RUNS": "1000000", "RATE_LIMIT_WINDOW_S": "5"}


@dataclass
class Fixtures:
    """Real resources and credentials of one fuzzing user (ids the fuzzer may aim at, or not)."""

    user: str
    jwt: str
    admin_jwt: str
    workspace_id: str
    server_id: str
    run_endpoint: dict[str, str]  # id, slug, key: a priced mock endpoint no fuzzed call may change
    async_endpoint: dict[str, str]
    mutable_endpoint_id: str  # PATCH, DELETE and regenerate-key aim here
    async_run_id: str
    webhook_id: str = ""  # a webhook of the user, and one of its deliveries
    delivery_id: str = ""


@dataclass
class Report:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)  # "<check>: <operation>" → examples
    transport_errors: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status >= 500)

    def violations(self, check: str) -> int:
        return sum(len(v) for k, v in self.failures.items() if k.startswith(f"{check}:"))

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "schema_violations": self.violations("response_schema_conformance"),
            "content_type_violations": self.violations("content_type_conformance"),
            "negative_data_accepted": self.violations("negative_data_rejection"),
            "transport_errors": self.transport_errors,
            "operations": len(self.by_operation),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "failures": {k: len(v) for k, v in sorted(self.failures.items())},
        }


def provision(base_url: str, user: str | None = None) -> Fixtures:
    """A workspace, an MCP server registration, endpoints (sync priced, async, mutable), a funded wallet."""
    user = user or f"fuzz-{uuid.uuid4().hex[:10]}"
    jwt = dev_token(user)
    auth = {"Authorization": f"Bearer {jwt}"}
    with httpx.Client(base_url=base_url, timeout=30, headers=auth) as http:

        def post(path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
            r = http.post(path, json=body, headers=headers)
            r.raise_for_status()
            result: dict[str, Any] = r.json()
            return result

        ws = post("/api/workspaces", {"name": "fuzz"})["workspace"]["id"]
        srv = post(f"/api/workspaces/{ws}/servers", {"name": "tools", "url": "http://127.0.0.1:9/mcp"})["server"]["id"]
        base = {"workspace_id": ws, "system_prompt": "Answer briefly.", "llm_provider": "mock"}

        def endpoint(name: str, **fields: Any) -> dict[str, str]:
            created = post("/api/agent-endpoints", {**base, "name": name, **fields})
            return {"id": created["endpoint"]["id"], "slug": created["endpoint"]["slug"], "key": created["api_key"]}

        run_ep = endpoint("fuzz run", price_per_run_cents=1)
        async_ep = endpoint("fuzz async", async_mode=True)
        mutable = endpoint("fuzz mutable")
        post("/api/balance/deposit", {"amount_cents": 50000}, **{"Idempotency-Key": str(uuid.uuid4())})
        webhook = post("/api/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["run.failed"]})["webhook"]["id"]
        delivery = post(f"/api/webhooks/{webhook}/test", {})["delivery"]["id"]
        r = http.post(f"/api/run/{async_ep['slug']}", json={"input": "hello"}, headers={"X-API-Key": async_ep["key"]})
        r.raise_for_status()
    return Fixtures(user, jwt, dev_token(f"{user}-admin", "admin"), ws, srv, run_ep, async_ep, mutable["id"],
                    r.json()["run_id"], webhook_id=webhook, delivery_id=delivery)  # fmt: skip


def _aim(op: Any, fx: Fixtures) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Valid path parameters, declared headers to fix, and undeclared headers to add, for one operation."""
    method, path = op.method.upper(), op.path
    mutates = method in ("PATCH", "DELETE") or path.endswith("/regenerate-key")
    ids = {
        "workspace_id": fx.workspace_id,
        "server_id": fx.server_id,
        "endpoint_id": fx.mutable_endpoint_id if mutates else fx.run_endpoint["id"],
        "slug": fx.run_endpoint["slug"],
        "run_id": fx.async_run_id,
        "user_id": fx.user,
        "webhook_id": fx.webhook_id,
        "delivery_id": fx.delivery_id,
    }
    names = {p.name for p in op.path_parameters}
    declared = {p.name.lower() for p in op.headers}
    jwt = fx.admin_jwt if path.startswith("/api/admin/") else fx.jwt
    fixed: dict[str, str] = {}
    extra: dict[str, str] = {}
    if path.startswith("/api/run/"):
        fixed["x-api-key"] = fx.run_endpoint["key"]
    elif path.startswith("/api/runs/"):
        extra["X-API-Key"] = fx.async_endpoint["key"]  # read from the request, not declared
    elif "authorization" in declared:
        fixed["authorization"] = f"Bearer {jwt}"
    return {k: v for k, v in ids.items() if k in names}, fixed, extra


def _strategy(op: Any, fx: Fixtures) -> Any:
    valid, fixed, _ = _aim(op, fx)
    return st.one_of(
        op.as_strategy(path_parameters=valid, headers=fixed),
        op.as_strategy(headers=fixed),
        op.as_strategy(GenerationMode.NEGATIVE, path_parameters=valid, headers=fixed),
        op.as_strategy(GenerationMode.NEGATIVE),
    )


def _failure_text(failure: Failure, case: Any, status: int) -> str:
    message = re.sub(r"\s+", " ", str(failure.message or ""))[:200]
    sent = {"path": case.path_parameters, "query": case.query, "body": case.body}
    return f"{status} {failure.title}: {message} | sent {sent!r:.300}"


def fuzz(
    base_url: str,
    fx: Fixtures,
    max_examples: int,
    *,
    seed: int | None = None,
    only: str | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Fuzz every operation of the gateway's OpenAPI document; failures are collected, never raised."""
    raw = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw, config=CONFIG)
    report = Report()
    session = requests.Session()
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation schemathesis cannot read is a defect of the document itself
            report.failures.setdefault("invalid_operation", []).append(str(result.err())[:300])
            continue
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        if only and not re.search(only, label):
            continue
        before = report.requests
        _fuzz_operation(op, fx, base_url, session, report, max_examples, seed)()
        log(f"fuzz: {label:<58} {report.requests - before:>5} requests")
    session.close()
    return report


def _fuzz_operation(
    op: Any,
    fx: Fixtures,
    base_url: str,
    session: requests.Session,
    report: Report,
    max_examples: int,
    seed: int | None,
) -> Callable[[], None]:
    label = f"{op.method.upper()} {op.path}"
    _, _, extra = _aim(op, fx)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=seed is not None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(case=_strategy(op, fx))
    def one(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, headers=extra, timeout=60)
        except requests.RequestException as err:
            report.transport_errors += 1
            report.failures.setdefault(f"transport: {label}", []).append(repr(err)[:300])
            return
        report.requests += 1
        report.by_status[response.status_code] += 1
        report.by_operation[label] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=extra)
        except FailureGroup as group:
            for failure in group.exceptions:
                name = next(iter(type(failure).checks), type(failure).__name__)
                report.failures.setdefault(f"{name}: {label}", []).append(
                    _failure_text(failure, case, response.status_code)
                )

    return one


def summarize(report: Report) -> str:
    lines = ["", f"fuzz: {report.requests} requests over {len(report.by_operation)} operations",
             f"      by status: {dict(sorted(report.by_status.items()))}",
             f"      server errors: {report.server_errors}, transport errors: {report.transport_errors}"]  # fmt: skip
    for key, examples in sorted(report.failures.items()):
        lines.append(f"FAIL {key} ({len(examples)}x)")
        lines += [f"     {e}" for e in sorted(set(examples))[:3]]
    if not report.failures:
        lines.append("no failures: no 5xx, every response matches its declared schema")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fuzz", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-examples", type=int, default=300, help="generated requests per operation, at most")
    p.add_argument("--seed", type=int, default=None, help="derandomize (same seed, same requests)")
    p.add_argument("--only", default=None, help="regex over 'METHOD /path' to fuzz a subset")
    p.add_argument("--url", default=None, help="fuzz this running gateway instead of starting a stack")
    p.add_argument("--keep", action="store_true", help="keep the stack's data folder and logs")
    a = p.parse_args(argv)
    stack: Stack | None = None
    try:
        if a.url:
            base_url = a.url.rstrip("/")
        else:
            data = Path(tempfile.mkdtemp(prefix="agentry-fuzz-"))
            env = {"ENVIRONMENT": "test", "ALLOW_PRIVATE_URLS": "true"}
            stack = Stack(data, nats_port=free_port(), pg_port=free_port(), fast_pg=True, echo=False, extra_env=env)
            stack.start_servers()
            stack.migrate()
            started = [stack.start_service(n, wait=False) for n in ("keys", "billing", "runner", "webhooks")]
            started.append(stack.start_service("gateway", wait=False, **GATEWAY_ENV))
            for svc in started:
                svc.wait_ready()
            base_url = started[-1].url
        report = fuzz(base_url, provision(base_url), a.max_examples, seed=a.seed, only=a.only)
    finally:
        if stack is not None:
            stack.stop()
            if a.keep:
                print(f"fuzz: data and service logs kept in {stack.data_dir}")
            else:
                shutil.rmtree(stack.data_dir, ignore_errors=True)
    print(summarize(report))
    print(json.dumps(report.as_json(), sort_keys=True), flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
