"""The events are a public interface: docs/asyncapi.json is generated from the services and must be current,
so a change of any event (or request) contract shows up in review as a change of that file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import unquote

from agentry_common import subjects
from agentry_common.events import AnyEvent

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "asyncapi.json"


def test_the_checked_in_asyncapi_document_is_what_the_services_generate() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentry_common.asyncapi", "--check", str(DOCUMENT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-6000:]


def _name(ref: dict[str, str]) -> str:
    return unquote(ref["$ref"].rsplit("/", 1)[-1])


def _operations(document: dict[str, Any], action: str) -> dict[str, str]:
    """Subject → payload schema name, for every operation with this action."""
    found = {}
    for operation in document["operations"].values():
        if operation["action"] != action:
            continue
        channel = document["channels"][_name(operation["channel"])]
        [message_ref] = channel["messages"].values()
        message = document["components"]["messages"][_name(message_ref)]
        found[channel["address"]] = message["payload"]["$ref"].split("/")[-1]
    return found


def test_every_event_is_documented_with_its_subject_its_sender_and_its_schema() -> None:
    document = json.loads(DOCUMENT.read_text())
    sent = _operations(document, "send")
    events: dict[str, Any] = {}  # every event class
    payloads = set()  # the schema each is sent as: its own, or its union's (run.progress, by `event`)
    for member in get_args(get_args(AnyEvent)[0]):
        if get_origin(member) is Annotated:
            union, field = get_args(member)
            events.update((model.__name__, model) for model in get_args(union))
            payloads.add(field.title)
            assert document["components"]["schemas"][field.title]["discriminator"] == field.discriminator
        else:
            events[member.__name__] = member
            payloads.add(member.__name__)
    assert payloads <= set(sent.values())  # every event type has a sender
    assert sent[subjects.RUN_REQUESTED] == "RunRequested"
    assert sent[subjects.RUN_COMPLETED] == "RunCompleted"
    assert sent[subjects.RUN_FAILED] == "RunFailed"
    assert sent[subjects.CHARGE_COLLECTED] == "ChargeCollected"
    assert sent[subjects.CHARGE_UNCOLLECTED] == "ChargeUncollected"
    received = _operations(document, "receive")
    assert received[subjects.RUN_REQUESTED] == "RunRequested"  # the runner's work queue
    assert received[subjects.RUN_COMPLETED] == "RunCompleted"  # billing's durable consumer
    for name, model in events.items():
        schema = document["components"]["schemas"][name]
        assert set(schema["properties"]) == set(model.model_fields), name
        assert "trace" in schema["properties"], name  # W3C trace context travels with every event
