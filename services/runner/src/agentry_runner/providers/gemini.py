"""Google Gemini `generateContent` with function calling (Generative Language API), as `google-genai` sends it.

The SDK's default API version (`v1`) and key header (`x-goog-api-key`); the tests hold every request against
the SDK's own types (`Content`, `Tool`, `ToolConfig`, `GenerationConfig`) and answer with its
`GenerateContentResponse`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .base import ChatRequest, Completion, Connection, Message, ProviderFailed, ToolRequest, post_json

API_VERSION = "v1"  # `google.genai._api_client.GOOGLE_AI_API_DEFAULT_VERSION` (a test holds them equal)


def _model_parts(m: Message) -> list[dict[str, Any]]:
    if m.provider == "gemini" and isinstance(m.raw, list):
        return m.raw  # keeps thought signatures, which Gemini needs back on the next turn
    parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
    parts += [{"functionCall": {"name": c.name, "args": c.arguments}} for c in m.tool_calls]
    return parts


def contents(history: list[Message]) -> list[dict[str, Any]]:
    """Gemini wants the function responses of one model turn together, in one user turn."""
    out: list[dict[str, Any]] = []
    for m in history:
        if m.role == "assistant":
            out.append({"role": "model", "parts": _model_parts(m)})
        elif m.role == "user":
            out.append({"role": "user", "parts": [{"text": m.content}]})
        else:
            key = "error" if m.is_error else "result"
            part = {"functionResponse": {"name": m.name, "response": {key: m.content}}}
            if m.tool_call_id and not m.tool_call_id.startswith("gemini-"):
                part["functionResponse"]["id"] = m.tool_call_id
            last = out[-1] if out else None
            if last and last["role"] == "user" and any("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
    return out


class Gemini:
    name = "gemini"

    def body(self, request: ChatRequest) -> dict[str, Any]:
        generation: dict[str, Any] = {"maxOutputTokens": request.max_tokens, "temperature": request.temperature}
        body: dict[str, Any] = {"contents": contents(request.messages), "generationConfig": generation}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        if request.tools:
            declarations = [
                {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
                for t in request.tools
            ]
            body["tools"] = [{"functionDeclarations": declarations}]
            mode = "AUTO" if request.allow_tools else "NONE"
            body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
        elif request.json_mode:
            generation["responseMimeType"] = "application/json"
        return body

    def parse(self, data: dict[str, Any]) -> Completion:
        usage = data.get("usageMetadata") or {}
        tokens_in = int(usage.get("promptTokenCount") or 0)
        tokens_out = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
        candidates = data.get("candidates") or []
        if not candidates:
            reason = str((data.get("promptFeedback") or {}).get("blockReason") or "no candidates")
            raise ProviderFailed("gemini returned no answer", detail=reason[:100])
        parts = (candidates[0].get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if "text" in p and not p.get("thought"))
        calls = []
        for i, p in enumerate(parts):
            fc = p.get("functionCall")
            if fc:
                args = fc.get("args", {})
                error = None if isinstance(args, dict) else "arguments are not a JSON object"
                call_id = str(fc.get("id") or f"gemini-{i}-{fc.get('name', '')}")
                calls.append(ToolRequest(call_id, str(fc.get("name", "")), args or {}, error))
        return Completion(text, calls, tokens_in, tokens_out, raw=parts)

    async def complete(self, request: ChatRequest, conn: Connection, deadline: float) -> Completion:
        headers = {"x-goog-api-key": conn.api_key} if conn.api_key else {}
        model = quote(request.model.removeprefix("models/"), safe="")
        url = f"{conn.base_url.rstrip('/')}/{API_VERSION}/models/{model}:generateContent"
        return self.parse(await post_json(conn, self.name, url, headers, self.body(request), deadline))
