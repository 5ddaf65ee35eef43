"""The AsyncAPI document of every message on Agentry's bus, generated from the services' FastStream brokers.

Request/reply handlers are FastStream subscribers and describe themselves. Events are published and consumed
with hand-written JetStream code (acknowledgements, batches, heartbeats), so each service declares them with
`publishes` / `consumes` next to that code: FastStream publisher and subscriber objects on `DOCUMENTED`, a
router that is only ever read for this document and never connected.

    python -m agentry_common.asyncapi [PATH]           write the document (make asyncapi)
    python -m agentry_common.asyncapi --check [PATH]   exit 1 if it differs from PATH (make test runs this)
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from faststream.nats import JStream, NatsRouter, PullSub

from .broker import make_broker
from .events import Event
from .settings import ServiceSettings
from .subjects import SERVICES, StreamSpec

DOCUMENTED = NatsRouter()
DEFAULT_PATH = Path("docs/asyncapi.json")
# The document describes a deployment, not the machine that generated it.
SERVER_URL = "nats://nats:4222"
VERSION = "1"

DESCRIPTION = """\
Every message on Agentry's NATS bus.

**Events** (past tense) are JSON documents on JetStream streams: `run.requested` (stream `RUNS`, a work
queue), `run.completed` / `run.failed` (stream `RUN_EVENTS`) and `billing.charge.collected` /
`billing.charge.uncollected` (stream `BILLING_EVENTS`). Platform teams may consume `run.completed`,
`run.failed` and `billing.charge.*` with durable consumers of their own (see `examples/webhook_forwarder`);
endpoint owners get them as signed HTTP webhooks from the webhooks service instead.

- Each event has `id`, `type`, `version`, `occurred_at` and `trace` (W3C trace context: `traceparent`, to
  continue the run's trace). Changes within a `version` are additive only; a breaking change is a new type.
- Each is published with the header `Nats-Msg-Id` set from its natural key (`run.completed:<run_id>`,
  `billing.charge.collected:<charge_id>`, …). Delivery is at least once: deduplicate on that key.

**Ephemeral broadcasts** (core NATS, not stored): `run.progress.{run_id}` and `keys.revoked`.

**Requests** (`keys.*`, `secrets.*`, `wallet.*`, `runs.*`, `webhooks.*`) are internal request/reply between
services; the reply is `{"ok": true, "result": …}` or `{"ok": false, "error": {"status", "code", "message"}}`. The bus
permissions let no one else send them.
"""


def _stream(stream: StreamSpec | None) -> JStream | None:
    return JStream(stream.name, declare=False) if stream else None


def _stored_in(stream: StreamSpec | None) -> str:
    if stream is None:
        return "Core NATS: not stored, only subscribers connected at the time receive it."
    days = stream.max_age_s / 86400
    kind = "work queue: each message is delivered to one consumer" if stream.work_queue else "kept"
    return (
        f"JetStream stream `{stream.name}` ({kind}; {days:g} days; duplicate window {stream.duplicate_window_s:g} s)."
    )


def publishes(subject: str, event: type[Event], *, by: str, description: str, stream: StreamSpec | None = None) -> None:
    """Declare, for the document, an event the `by` service sends with its own code."""
    DOCUMENTED.publisher(
        subject,
        stream=_stream(stream),
        schema=event,
        title=subject,
        description=f"Sent by the {by} service. {description} {_stored_in(stream)}",
    )


def consumes(
    subject: str,
    event: type[Event],
    *,
    by: str,
    description: str,
    stream: StreamSpec | None = None,
    durable: str | None = None,
) -> None:
    """Declare, for the document, an event the `by` service receives with its own code."""

    async def receive(body: Any) -> None:
        return None

    receive.__annotations__ = {"body": event, "return": None}  # FastStream reads the payload type from here
    how = f"durable consumer `{durable}`" if durable else "a core NATS subscription"
    DOCUMENTED.subscriber(
        subject,
        stream=_stream(stream),
        durable=durable,
        pull_sub=PullSub() if durable else False,
        title=f"{subject} ({by})",
        description=f"Received by the {by} service with {how}. {description}",
    )(receive)


def specification(services: tuple[str, ...]) -> dict[str, Any]:
    """The document, from each service's broker (its request handlers) and everything declared above."""
    from faststream.specification import AsyncAPI

    brokers = [importlib.import_module(f"agentry_{name}.entrypoints.api").broker for name in services]
    # The services declared into the importable module, which is not this one when run with `python -m`.
    declared: NatsRouter = importlib.import_module("agentry_common.asyncapi").DOCUMENTED
    documented = make_broker(ServiceSettings(), "asyncapi")  # the services' server, security included
    documented.include_router(declared)
    spec = AsyncAPI(*brokers, documented, title="Agentry events and requests", version=VERSION, description=DESCRIPTION)
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document


def render(services: tuple[str, ...]) -> str:
    return json.dumps(specification(services), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentry_common.asyncapi", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    # Settings are read when the services are imported: fix what the document shows of them.
    os.environ.update(
        ENVIRONMENT="development",
        NATS_URL=SERVER_URL,
        NATS_USER="service",
        NATS_PASSWORD="see-bus-permissions",  # noqa: S106
    )
    text = render(SERVICES)
    if not args.check:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        args.path.write_text(text)
        return 0
    current = args.path.read_text() if args.path.exists() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.path), "generated", lineterm="")
    print("\n".join(list(diff)[:200]), file=sys.stderr)
    print(f"{args.path} is out of date: run `make asyncapi` and commit it if the change is deliberate",
          file=sys.stderr)  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
