"""The OpenAI-compatible run API: `POST /v1/chat/completions` and `GET /v1/models` for `aek_` keys.

A second face of the same run as `POST /api/run/{slug}`, not a second pipeline: the same key check, status
check and rate limits (`runs.admit_run`), the same dispatch, so the same charging and history. `model` is the
endpoint's slug and must be the key's own endpoint. The last message (a `user` one) is the run's input; the
earlier `user`/`assistant` turns go to the model as conversation history. What Agentry cannot honour is refused
with 400, never silently dropped: caller `system`/`developer` messages (the endpoint's own system prompt rules),
tool turns and caller-declared `tools` (the endpoint's own tools rule), `n` > 1. Sampling options (temperature,
max_tokens, …) are accepted and ignored: the endpoint's own model settings rule.

Errors on `/v1/*` are OpenAI's shape, `{"error": {message, type, code, param}}`, with the same statuses and
headers (`Retry-After`, `X-RateLimit-*`, `X-Run-Id`) as `/api/run`; this router's route class renders them, so
the rest of the API keeps its own shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sse_starlette import ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentry_common.app import FASTAPI_UNPARSABLE_BODY, error_response, validation_message
from agentry_common.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from agentry_common.events import ChatTurn, RunProgress, Usage
from agentry_common.requests import VerifiedKey

from .. import sse
from ..catalog_cache import RunnableEndpoint
from ..dispatch import raise_for_error
from ..openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    CompletionUsage,
    Model,
    ModelList,
    OpenAIError,
)
from .deps import Gateway, GatewayDep
from .runs import admit_run, api_key_from, started_run

# OpenAI's error `type` for each status (its SDKs pick the exception class by the status alone).
_TYPES = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    429: "rate_limit_error",
}


class Refused(BadRequest):
    """A request Agentry cannot honour as asked (400), naming the field at fault."""

    def __init__(self, message: str, *, code: str, param: str):
        super().__init__(message, code=code)
        self.param = param


def openai_error(err: Exception) -> Response:
    """Any error as OpenAI renders one, with the status and headers the rest of the API would give it."""
    param: str | None = getattr(err, "param", None)
    if isinstance(err, RequestValidationError):
        errors = list(err.errors())
        loc = [str(p) for p in errors[0].get("loc", ()) if p != "body"] if errors else []
        err, param = ValidationFailed(validation_message(errors)), (".".join(loc) or None)
    elif isinstance(err, StarletteHTTPException):
        unparsable = err.status_code == 400 and err.detail == FASTAPI_UNPARSABLE_BODY
        message = "body: not valid JSON text (UTF-8 expected)" if unparsable else str(err.detail)
        err = ValidationFailed(message) if unparsable else BadRequest(message, code="http_error")
    response = error_response(err)
    ours = orjson.loads(bytes(response.body))["error"]
    status = response.status_code
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": ours["message"], "type": kind, "code": ours["code"], "param": param}}
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


class OpenAIRoute(APIRoute):
    """Routes under `/v1` answer every error (validation included) in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as err:
                return openai_error(err)

        return handle


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": text}
    for status, text in {
        400: "A request Agentry cannot honour as asked: `system_message_not_supported`, `tools_not_supported`, "
        "`unsupported_content` (non-text parts), `unsupported_parameter` (n > 1), `last_message_not_user`",
        401: "Missing or invalid API key",
        402: "A spend cap or budget is reached",
        403: "Endpoint disabled",
        404: "`model` is not the key's endpoint (`model_not_found`)",
        413: "Request body too large",
        422: "Invalid body; the message names the field",
        429: "Rate limited (see Retry-After)",
        502: "LLM provider error or invalid output",
        503: "A backing service or the broker is unavailable",
        504: "The run timed out",
    }.items()
}

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=ERRORS)
KeyHeader = Annotated[str | None, Header(description="`Bearer aek_…`")]
XKeyHeader = Annotated[str | None, Header(description="`aek_…` (alternative to Authorization)")]


async def _verified(gw: Gateway, authorization: str | None, x_api_key: str | None) -> tuple[str, VerifiedKey]:
    key = api_key_from(authorization, x_api_key)
    if not key:
        raise Unauthorized("an API key (Authorization: Bearer aek_…) is needed", code="missing_api_key")
    return key, await gw.keys.verify(key)


async def _endpoint(gw: Gateway, model: str, verdict: VerifiedKey) -> RunnableEndpoint:
    try:
        ep: RunnableEndpoint | None = await gw.cache.by_slug(model)
    except NotFound:
        ep = None
    if ep is None or ep.snapshot.id != verdict.endpoint_id:
        # One answer for "no such endpoint" and "not this key's": a key learns nothing about other endpoints.
        err = NotFound(f"the model {model!r} does not exist or this key cannot call it", code="model_not_found")
        err.param = "model"  # type: ignore[attr-defined]
        raise err
    return ep


def _text(message: ChatMessage, where: str) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(part.type != "text" or part.text is None for part in message.content):
        raise Refused("only text content parts are accepted", code="unsupported_content", param=where)
    return "\n".join(part.text or "" for part in message.content)


def conversation(body: ChatCompletionRequest) -> tuple[list[ChatTurn], str]:
    """The earlier turns and the input, or a 400 naming what cannot be honoured."""
    if body.tools or body.functions:
        why = "tools are the endpoint's own; caller-declared tools are not accepted"
        raise Refused(why, code="tools_not_supported", param="tools")
    if body.tool_choice not in (None, "none", "auto"):
        why = "tool_choice: the endpoint decides its tool use"
        raise Refused(why, code="tools_not_supported", param="tool_choice")
    if body.n not in (None, 1):
        raise Refused("n: one choice per run", code="unsupported_parameter", param="n")
    turns: list[ChatTurn] = []
    for i, message in enumerate(body.messages):
        where = f"messages.{i}"
        if message.role in ("system", "developer"):
            raise Refused(
                f"{where}: {message.role} messages are not accepted; the endpoint's own system prompt rules",
                code="system_message_not_supported",
                param=where,
            )
        if message.role in ("tool", "function") or message.tool_calls or message.tool_call_id:
            text = f"{where}: tool turns are not accepted; the endpoint runs its own tools"
            raise Refused(text, code="tools_not_supported", param=where)
        turns.append(ChatTurn(role="user" if message.role == "user" else "assistant", content=_text(message, where)))
    last = turns.pop()
    if last.role != "user":
        text = "the last message must be the user's: it is the run's input"
        raise Refused(text, code="last_message_not_user", param=f"messages.{len(turns)}")
    return turns, last.content


def _input(ep: RunnableEndpoint, text: str) -> str | dict[str, Any]:
    """An endpoint with an input schema takes a JSON object: the message's text, parsed, when it is one."""
    if ep.input_validator is not None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, dict):
            return value
    return text


def _output_text(output: Any) -> str:
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def _usage(usage: Usage) -> CompletionUsage:
    prompt, completion = usage.tokens_input, usage.tokens_output
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="Run an endpoint as an OpenAI chat completion",
    responses={200: {"content": {"text/event-stream": {}}, "description": "`stream: true`: chunks, then [DONE]"}},
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    gw: GatewayDep,
    authorization: KeyHeader = None,
    x_api_key: XKeyHeader = None,
) -> Response:
    key, verdict = await _verified(gw, authorization, x_api_key)
    ep = await _endpoint(gw, body.model, verdict)
    history, text = conversation(body)
    admitted = await admit_run(gw, ep, request, key, verdict)
    admission = admitted.admission
    async with admission.on_errors():
        value = _input(ep, text)
        problem = ep.validate_input(value)
        if problem:
            raise ValidationFailed(problem, code="invalid_input")
        # The caller's `stream` decides how this run answers; an async endpoint answers here too (OpenAI has no 202).
        snap = ep.snapshot.model_copy(update={"async_mode": False, "enable_streaming": body.stream})
        async with started_run(gw, admitted, snap) as run_id:
            if body.stream:
                _, events = await gw.dispatcher.progress(snap, value, False, run_id, admitted.key_id, history)
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                headers = {**(await admission.decision()).headers(), "X-Run-Id": run_id}
                return sse.response(chunks(run_id, body.model, events, include_usage), headers)
            result = await gw.dispatcher.run(snap, value, False, run_id, admitted.key_id, history)
        headers = {**(await admission.decision()).headers(), "X-Run-Id": result.run_id}
    completion = ChatCompletion(
        id=result.run_id,
        created=int(time.time()),
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=_output_text(result.output)))],
        usage=_usage(result.usage),
    )
    return Response(completion.model_dump_json().encode(), headers=headers, media_type="application/json")


async def chunks(
    run_id: str, model: str, events: AsyncGenerator[RunProgress, None], include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    """`chat.completion.chunk` events from the run's progress. The output arrives whole with `done`; progress
    before it (`thinking`, `tool_call`, `tool_result`) goes out as SSE comments, which SDKs skip and people
    watching with curl see, and which keep the connection alive through long tool calls."""
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> ServerSentEvent:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        body: dict[str, Any] = {"id": run_id, "object": "chat.completion.chunk", "created": created, "model": model}
        body.update(system_fingerprint=None, choices=choices)
        if include_usage:
            body["usage"] = usage
        return sse.event(orjson.dumps(body).decode())

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(events):
        async for progress in events:
            if progress.event == "done":
                yield chunk({"content": _output_text(progress.data.output)})
                yield chunk({}, finish="stop")
                if include_usage:
                    yield chunk(None, usage=_usage(progress.data.usage).model_dump())
                yield sse.event("[DONE]")
            elif progress.event == "error":
                try:
                    raise_for_error(run_id, progress)
                except Exception as err:
                    yield sse.event(bytes(openai_error(err).body).decode())
            else:
                data = orjson.dumps(progress.data.model_dump(mode="json")).decode()
                yield sse.comment(f"{progress.event} {data}")


async def _model(gw: Gateway, verdict: VerifiedKey) -> Model:
    async with gw.unit_of_work() as repo:
        ep = await repo.endpoint_by_id(verdict.endpoint_id)
    if ep is None:  # deleted since the key was verified
        raise Unauthorized("invalid API key", code="invalid_api_key")
    return Model(id=ep.slug, created=int(ep.created_at.timestamp()), owned_by="agentry")


@router.get("/models", summary="The endpoint this key may call, as an OpenAI model list")
async def list_models(gw: GatewayDep, authorization: KeyHeader = None, x_api_key: XKeyHeader = None) -> ModelList:
    _, verdict = await _verified(gw, authorization, x_api_key)
    return ModelList(data=[await _model(gw, verdict)])


@router.get("/models/{model}", summary="One model (endpoint slug), if this key may call it")
async def get_model(model: str, gw: GatewayDep, authorization: KeyHeader = None, x_api_key: XKeyHeader = None) -> Model:
    _, verdict = await _verified(gw, authorization, x_api_key)
    found = await _model(gw, verdict)
    if found.id != model:
        err = NotFound(f"the model {model!r} does not exist or this key cannot call it", code="model_not_found")
        err.param = "model"  # type: ignore[attr-defined]
        raise err
    return found


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown(path: str) -> Response:
    raise NotFound(f"/v1/{path} is not served; /v1/chat/completions and /v1/models are", code="unknown_url")
