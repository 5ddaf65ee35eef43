"""The LLM providers on loopback, held to their official SDKs (`openai`, `anthropic`, `google-genai`).

Every request is checked against the SDK's own request types and headers, strictly: a key the type does not
declare is drift (pydantic ignores extra keys of a TypedDict, so `strict_errors` walks the TypedDicts itself;
google-genai's models forbid extras already). A request that drifts is recorded in `FakeLLM.drift`, which fails
the test (conftest), and answered 400. Answers are the SDKs' own response models, dumped as they travel.

Loaded by conftest (pytest's importlib mode puts no test directory on `sys.path`).
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import functools
import time
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anthropic._constants
import openai
import orjson
import pydantic
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from google.genai import _api_client as genai_client
from google.genai import types as gt
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typing_extensions import is_typeddict

ANTHROPIC_VERSION = anthropic._constants.ANTHROPIC_API_VERSION
GEMINI_VERSION = genai_client.GOOGLE_AI_API_DEFAULT_VERSION
# generateContent's top-level fields, each as the SDK's own model (camelCase aliases, extra keys forbidden).
GEMINI_FIELDS: dict[str, Any] = {
    "contents": list[gt.Content],
    "systemInstruction": gt.Content,
    "tools": list[gt.Tool],
    "toolConfig": gt.ToolConfig,
    "generationConfig": gt.GenerationConfig,
    "safetySettings": list[gt.SafetySetting],
    "cachedContent": str,
}


# --- strict TypedDict conformance ---


@functools.cache
def _hints(tp: Any) -> dict[str, tuple[Any, bool]]:
    """A TypedDict's keys as sent on the wire (an SDK `PropertyInfo(alias=…)` renames one) → (type, required)."""
    out = {}
    for name, hint in typing.get_type_hints(tp, include_extras=True).items():
        wire = name
        if typing.get_origin(hint) is typing.Annotated:
            for meta in typing.get_args(hint)[1:]:
                wire = getattr(meta, "alias", None) or wire
        out[wire] = (hint, name in tp.__required_keys__)
    return out


def strict_errors(value: Any, tp: Any, path: str = "body") -> list[str]:
    """Why `value` is not exactly `tp` (no undeclared keys at any depth); [] when it is."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (Any, object):
        return []
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return strict_errors(value, args[0], path)
    if hasattr(tp, "__value__"):  # a `type X = …` alias
        return strict_errors(value, tp.__value__, path)
    if origin in (typing.Union, types.UnionType):
        tries = [strict_errors(value, member, path) for member in args]
        if any(not t for t in tries):
            return []
        # The member that got furthest says what is wrong; a mismatch of the value itself says little.
        return min(tries, key=lambda t: (all(e.startswith(f"{path}: ") for e in t), len(t)))
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({tp.__name__})"]
        hints = _hints(tp)
        errors = [f"{path}.{k}: not a field of {tp.__name__}" for k in value if k not in hints]
        errors += [f"{path}.{k}: required by {tp.__name__}" for k, (_, req) in hints.items() if req and k not in value]
        for key, item in value.items():
            if key in hints:
                errors += strict_errors(item, hints[key][0], f"{path}.{key}")
        return errors
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return [f"{path}: only a response model ({tp.__name__}) takes this; a request sends the *Param"]
    if origin in (dict, cabc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        item_type = args[1] if len(args) == 2 else Any
        return [e for k, v in value.items() for e in strict_errors(v, item_type, f"{path}.{k}")]
    if origin in (list, cabc.Iterable, cabc.Sequence) or getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        item_type = args[0] if args else Any
        return [e for i, v in enumerate(value) for e in strict_errors(v, item_type, f"{path}[{i}]")]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if tp is float:
        return [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{path}: expected a number"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    try:  # anything else (dates, enums): the SDK's own validation
        pydantic.TypeAdapter(tp).validate_python(value)
    except pydantic.ValidationError as err:
        return [f"{path}: {err.errors()[0]['msg']}"]
    return []


def _params_errors(body: Any, tp: Any) -> list[str]:
    """The SDK's own validation of the params (types, values), then the strict walk (undeclared keys)."""
    try:
        pydantic.TypeAdapter(tp).validate_python(body)
    except pydantic.ValidationError as err:
        return [f"body{list(e['loc'])}: {e['msg']}" for e in err.errors()[:5]]
    return strict_errors(body, tp)


def _auth_errors(headers: dict[str, str], expected: dict[str, str], names: tuple[str, ...]) -> list[str]:
    sent = {k: v for k, v in headers.items() if k in names}
    want = {k.lower(): v for k, v in expected.items()}
    return [] if sent == want else [f"credentials sent as {sorted(sent)}, the SDK sends {sorted(want)}"]


def _token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth else headers.get("x-api-key") or headers.get("x-goog-api-key")


def openai_errors(request: Request, headers: dict[str, str], body: Any) -> list[str]:
    token = _token(headers)
    expected = openai.OpenAI(api_key=token, base_url="http://sdk.invalid").auth_headers if token else {}
    errors = _auth_errors(headers, expected, ("authorization", "x-api-key"))
    return errors + _params_errors(body, CompletionCreateParamsNonStreaming)


def anthropic_errors(request: Request, headers: dict[str, str], body: Any) -> list[str]:
    token = _token(headers)
    expected = anthropic.Anthropic(api_key=token, base_url="http://sdk.invalid").auth_headers if token else {}
    errors = _auth_errors(headers, expected, ("authorization", "x-api-key"))
    if headers.get("anthropic-version") != ANTHROPIC_VERSION:
        errors.append(f"anthropic-version {headers.get('anthropic-version')!r}, the SDK sends {ANTHROPIC_VERSION!r}")
    return errors + _params_errors(body, MessageCreateParamsNonStreaming)


def gemini_errors(request: Request, headers: dict[str, str], body: Any) -> list[str]:
    errors = []
    if request.path_params["version"] != GEMINI_VERSION:
        errors.append(f"API version {request.path_params['version']}, the SDK's is {GEMINI_VERSION}")
    if "key" in request.query_params or "authorization" in headers:
        errors.append("the key travels in the x-goog-api-key header with the SDK")
    if not isinstance(body, dict) or "contents" not in body:
        return [*errors, "body: contents is required"]
    for key, value in body.items():
        if key not in GEMINI_FIELDS:
            errors.append(f"body.{key}: not a generateContent field")
            continue
        try:  # from JSON, so bytes fields (thought signatures) must be base64 as the SDK has them
            pydantic.TypeAdapter(GEMINI_FIELDS[key]).validate_json(orjson.dumps(value))
        except pydantic.ValidationError as err:
            errors += [f"body.{key}{list(e['loc'])}: {e['msg']}" for e in err.errors()[:5]]
    return errors


# --- the server ---


@dataclass
class Reply:
    body: dict[str, Any] | None = None
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # an error in the answering provider's own shape, with this message
    error_details: list[dict[str, Any]] = field(default_factory=list)  # Gemini's `error.details`


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _error_body(family: str, reply: Reply) -> dict[str, Any]:
    message = reply.error or ""
    if family == "anthropic":
        kind = "authentication_error" if reply.status == 401 else "invalid_request_error"
        return anthropic.types.ErrorResponse.model_validate(
            {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
        ).model_dump(mode="json", exclude_none=True)
    if family == "gemini":  # google-genai has no model for errors; `errors.APIError` reads this shape
        error = {"code": reply.status, "message": message, "status": "INVALID_ARGUMENT"}
        return {"error": {**error, "details": reply.error_details} if reply.error_details else error}
    error_object = openai.types.ErrorObject(message=message, type="invalid_request_error", param=None, code=None)
    return {"error": error_object.model_dump(mode="json", exclude_none=True)}


class FakeLLM:
    """Providers on loopback. `script(model, *replies)`: replies in order, the last one repeating."""

    CHECKS: typing.ClassVar[dict[str, Any]] = {
        "openai": openai_errors,
        "anthropic": anthropic_errors,
        "gemini": gemini_errors,
    }

    def __init__(self) -> None:
        self.url = ""
        self.scripts: dict[str, list[Reply]] = {}
        self.seen: dict[str, list[Seen]] = {}
        self.drift: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/anthropic/v1/messages", self._anthropic, methods=["POST"]),
                Route("/gemini/{version}/models/{call}", self._gemini, methods=["POST"]),
                Route("/{prefix:path}/chat/completions", self._openai, methods=["POST"]),
            ]
        )

    def model(self, *replies: Reply, family: str = "model") -> str:
        """A fresh model name scripted with `replies`, so tests never share a script."""
        name = f"{family}-{uuid.uuid4().hex[:10]}"
        self.scripts[name] = list(replies)
        return name

    def requests(self, model: str) -> list[Seen]:
        return self.seen.get(model, [])

    async def _openai(self, request: Request) -> JSONResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: Request) -> JSONResponse:
        return await self._handle(request, "anthropic")

    async def _gemini(self, request: Request) -> JSONResponse:
        return await self._handle(request, "gemini")

    async def _handle(self, request: Request, family: str) -> JSONResponse:
        body = await request.json()
        headers = dict(request.headers)
        model = body.get("model") or request.path_params.get("call", "").split(":")[0]
        self.seen.setdefault(model, []).append(Seen(request.url.path, headers, body))
        problems = self.CHECKS[family](request, headers, body)
        if problems:
            self.drift += [f"{family} {request.url.path}: {p}" for p in problems]
            return JSONResponse({"error": {"message": "; ".join(problems)}}, status_code=400)
        script = self.scripts.get(model) or [Reply(status=404, error="unknown model")]
        reply = script.pop(0) if len(script) > 1 else script[0]
        waited = 0.0
        while waited < reply.delay and not await request.is_disconnected():
            await asyncio.sleep(0.05)
            waited += 0.05
        answer = _error_body(family, reply) if reply.error is not None else reply.body or {}
        return JSONResponse(answer, status_code=reply.status, headers=reply.headers)

    # --- answers, built from each SDK's response model ---

    @staticmethod
    def openai(text: str | None = None, calls: list[tuple[str, dict[str, Any]]] = (), usage=(11, 7)) -> Reply:  # type: ignore[assignment]
        tool_calls = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
            for i, (n, a) in enumerate(calls)
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}
        usage_ = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        answer = ChatCompletion.model_validate(
            {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": "fake",
             "choices": [choice], "usage": usage_}
        )  # fmt: skip
        return Reply(answer.model_dump(mode="json"))

    @staticmethod
    def anthropic(text: str | None = None, calls: list[tuple[str, dict[str, Any]]] = (), usage=(13, 8)) -> Reply:  # type: ignore[assignment]
        content: list[dict[str, Any]] = [{"type": "text", "text": text, "citations": None}] if text else []
        content += [{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a} for i, (n, a) in enumerate(calls)]
        answer = anthropic.types.Message.model_validate(
            {"id": "msg_1", "type": "message", "role": "assistant", "model": "fake", "content": content,
             "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
             "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
        )  # fmt: skip
        return Reply(answer.model_dump(mode="json"))

    @staticmethod
    def gemini(text: str | None = None, calls: list[tuple[str, dict[str, Any]]] = (), usage=(17, 9)) -> Reply:  # type: ignore[assignment]
        parts = [gt.Part(text=text)] if text else []
        parts += [
            gt.Part(function_call=gt.FunctionCall(name=n, args=a), thought_signature=f"sig{i}".encode())
            for i, (n, a) in enumerate(calls)
        ]
        answer = gt.GenerateContentResponse(
            candidates=[
                gt.Candidate(content=gt.Content(role="model", parts=parts), finish_reason=gt.FinishReason.STOP)
            ],
            usage_metadata=gt.GenerateContentResponseUsageMetadata(
                prompt_token_count=usage[0], candidates_token_count=usage[1], total_token_count=sum(usage)
            ),
            model_version="fake",
        )
        return Reply(answer.model_dump(mode="json", by_alias=True, exclude_none=True))

    @staticmethod
    def error(status: int, message: str = "nope", **headers: str) -> Reply:
        return Reply(status=status, headers=headers, error=message)
