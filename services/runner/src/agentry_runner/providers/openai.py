"""OpenAI-compatible chat completions with tools: `openai`, `groq`, and `custom` (any compatible base URL)."""

from __future__ import annotations

from typing import Any

import orjson

from ..output import wants_object
from .base import ChatRequest, Completion, Connection, Message, ToolRequest, post_json, provider_error


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "user":
        return {"role": "user", "content": m.content}
    out: dict[str, Any] = {"role": "assistant", "content": m.content or None}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
            }
            for c in m.tool_calls
        ]
    return out


def _tool_request(raw: dict[str, Any]) -> ToolRequest:
    fn = raw.get("function") or {}
    text = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(text) if isinstance(text, str) else text
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        return ToolRequest(str(raw.get("id", "")), str(fn.get("name", "")), {}, "arguments are not a JSON object")
    return ToolRequest(str(raw.get("id", "")), str(fn.get("name", "")), args)


class OpenAICompatible:
    def __init__(self, name: str, *, max_tokens_field: str = "max_tokens", json_response_format: bool = False):
        self.name = name
        self.max_tokens_field = max_tokens_field
        # `response_format` is not supported by every compatible server, nor alongside tools by all of them.
        self.json_response_format = json_response_format

    def body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(_message(m) for m in request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            self.max_tokens_field: request.max_tokens,
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            body["tool_choice"] = "auto" if request.allow_tools else "none"
        elif request.json_mode and self.json_response_format and wants_object(request.output_schema):
            body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, data: dict[str, Any]) -> Completion:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise provider_error(f"{self.name} answered without a message") from None
        usage = data.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            tool_calls=[_tool_request(c) for c in message.get("tool_calls") or []],
            tokens_input=int(usage.get("prompt_tokens") or 0),
            tokens_output=int(usage.get("completion_tokens") or 0),
        )

    async def complete(self, request: ChatRequest, conn: Connection, deadline: float) -> Completion:
        headers = {"authorization": f"Bearer {conn.api_key}"} if conn.api_key else {}
        url = conn.base_url.rstrip("/") + "/chat/completions"
        return self.parse(await post_json(conn, self.name, url, headers, self.body(request), deadline))
