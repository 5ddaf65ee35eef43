"""The `mock` provider: an offline, deterministic development model. It never touches the network.

- **Deterministic**: the same system prompt, input and tool results give the same answer, byte for byte.
- **Tokens** ≈ characters / 4 (at least 1): input counts the system prompt and every message sent, output
  counts the answer (or the tool call's arguments).
- **Text / markdown**: answers `mock answer: <the input, or the last tool result>`.
- **JSON** (when asked for JSON): answers a JSON object — one that satisfies the endpoint's `output_schema`
  when there is one (built from `type`, `properties`, `required`, `enum`, `const`, `default`), otherwise
  `{"answer": …}`.
- **Directives**: when the run's input is a JSON object with a `"mock"` key, that object steers the model:
  - `{"mock": {"tool": "<server-slug>__<tool>", "arguments": {...}}}` — the first call requests that tool
    call (whether or not it is offered); once the tool's result is in the conversation, the model answers
    using it (`"rounds": n` repeats the call n times first, to exercise `max_tool_calls`).
  - `{"mock": {"answers": ["not json", "{\"ok\": true}"]}}` — the n-th answer is the n-th string verbatim
    (the last one repeats): scripts invalid-then-corrected output.
  - `{"mock": {"fail": "llm_auth_error" | "llm_provider_error" | "llm_timeout"}}` — the call fails that way.
  - `{"mock": {"delay_ms": 200}}` — each call takes that long (for timeouts and streaming demos).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import orjson

from agentry_common.errors import UpstreamFailed

from .base import ChatRequest, Completion, Connection, Message, ToolRequest


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def directives(messages: list[Message]) -> dict[str, Any]:
    """The `"mock"` object of the run's input, if it is a JSON object carrying one."""
    try:
        value = orjson.loads(messages[0].content) if messages else None
    except orjson.JSONDecodeError:
        return {}
    found = value.get("mock") if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def example(schema: Any, depth: int = 0) -> Any:
    """A small value satisfying the common parts of a JSON Schema."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: example(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [example(schema["items"], depth + 1)] * int(schema.get("minItems", 0)) if "items" in schema else []
    if kind == "string":
        return "mock".ljust(int(schema.get("minLength", 0)), "k")
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    return None


class Mock:
    name = "mock"

    async def complete(self, request: ChatRequest, conn: Connection | None, deadline: float) -> Completion:
        steer = directives(request.messages)
        if steer.get("delay_ms"):
            await asyncio.sleep(float(steer["delay_ms"]) / 1000)
        if steer.get("fail") in ("llm_auth_error", "llm_provider_error", "llm_timeout"):
            raise UpstreamFailed(f"mock provider asked to fail with {steer['fail']}", code=str(steer["fail"]))
        sent = request.system + "".join(m.content for m in request.messages)
        sent += "".join(orjson.dumps(c.arguments).decode() for m in request.messages for c in m.tool_calls)
        call = self._tool_call(request, steer)
        if call is not None:
            return Completion("", [call], tokens(sent), tokens(orjson.dumps(call.arguments).decode()))
        text = self._answer(request, steer)
        return Completion(text, [], tokens(sent), tokens(text))

    def _tool_call(self, request: ChatRequest, steer: dict[str, Any]) -> ToolRequest | None:
        # Requested even when not offered: models do call tools that do not exist, and the loop must cope.
        name = steer.get("tool")
        done = sum(1 for m in request.messages if m.role == "tool")
        if not request.allow_tools or not isinstance(name, str) or done >= int(steer.get("rounds", 1)):
            return None
        args = steer.get("arguments")
        args = args if isinstance(args, dict) else {}
        digest = hashlib.sha256(f"{name}:{done}".encode()).hexdigest()[:16]
        return ToolRequest(f"call_{digest}", name, args)

    def _answer(self, request: ChatRequest, steer: dict[str, Any]) -> str:
        scripted = steer.get("answers")
        if isinstance(scripted, list) and scripted:
            given = sum(1 for m in request.messages if m.role == "assistant" and not m.tool_calls)
            return str(scripted[min(given, len(scripted) - 1)])
        results = [m.content for m in request.messages if m.role == "tool"]
        basis = results[-1] if results else (request.messages[0].content if request.messages else "")
        if not request.json_mode:
            return f"mock answer: {basis}"
        value = example(request.output_schema) if request.output_schema else {"answer": basis}
        return orjson.dumps(value).decode()
