"""Anthropic Messages API with tool use (`POST /v1/messages`), as the current official SDK sends it.

The API version and the key's header are the SDK's (`anthropic-version`, `Authorization: Bearer`); the tests
hold every request against the SDK's `MessageCreateParamsNonStreaming`. Its current version has no sampling
`temperature`, so an endpoint's temperature does not reach Anthropic models.
"""

from __future__ import annotations

from typing import Any

from .base import ChatRequest, Completion, Connection, Message, ToolRequest, post_json, provider_error

API_VERSION = "2026-10-21"  # `anthropic._constants.ANTHROPIC_API_VERSION` (a test holds them equal)


def _assistant_blocks(m: Message) -> list[dict[str, Any]]:
    if m.provider == "anthropic" and isinstance(m.raw, list):
        # Replayed as sent (thinking blocks and their signatures included), less the nulls an answer carries
        # for fields a request may only leave out (`caller`, `citations`).
        return [{k: v for k, v in b.items() if v is not None} for b in m.raw if isinstance(b, dict)]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
    return blocks


def messages(history: list[Message]) -> list[dict[str, Any]]:
    """Anthropic wants every tool result of one assistant turn in a single user message."""
    out: list[dict[str, Any]] = []
    for m in history:
        if m.role == "assistant":
            out.append({"role": "assistant", "content": _assistant_blocks(m)})
        elif m.role == "user":
            out.append({"role": "user", "content": m.content})
        else:
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if m.is_error:
                block["is_error"] = True
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
    return out


class Anthropic:
    name = "anthropic"

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages(request.messages),
        }
        if request.system:
            body["system"] = request.system
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
            body["tool_choice"] = {"type": "auto" if request.allow_tools else "none"}
        return body

    def parse(self, data: dict[str, Any]) -> Completion:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise provider_error("anthropic answered without content")
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = []
        for b in blocks:
            if b.get("type") == "tool_use":
                args = b.get("input")
                error = None if isinstance(args, dict) else "arguments are not a JSON object"
                calls.append(ToolRequest(str(b.get("id", "")), str(b.get("name", "")), args or {}, error))
        usage = data.get("usage") or {}
        tokens_in = sum(
            int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return Completion(text, calls, tokens_in, int(usage.get("output_tokens") or 0), raw=blocks)

    async def complete(self, request: ChatRequest, conn: Connection, deadline: float) -> Completion:
        headers = {"anthropic-version": API_VERSION}
        if conn.api_key:
            headers["authorization"] = f"Bearer {conn.api_key}"
        url = conn.base_url.rstrip("/") + "/v1/messages"
        return self.parse(await post_json(conn, self.name, url, headers, self.body(request), deadline))
