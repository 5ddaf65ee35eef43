"""The SSE streams clients read, byte for byte: `/api/run` relays each progress message as `event: <kind>` and
`data: {"run_id", …data}`; `/v1/chat/completions` sends OpenAI chunks, progress as comments, then
`data: [DONE]`. The expected bytes are built the way the gateway built them by hand before it used
sse-starlette, from the progress messages exactly as the runner puts them on the bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentry_common.events import (
    DoneData,
    ErrorData,
    RunProgress,
    ThinkingData,
    ToolCall,
    ToolCallData,
    ToolResultData,
    Usage,
    progress_of,
    run_progress,
)
from agentry_gateway import sse
from agentry_gateway.dispatch import progress_frame
from agentry_gateway.entrypoints.openai_compat import chunks
from agentry_gateway.openai_schemas import CompletionUsage

RUN = "run_0123"
USAGE = Usage(tokens_input=12, tokens_output=7, cost_cents=0.0123, latency_ms=840, iterations=2)
CALL = ToolCall(name="calc__add", arguments={"b": 3, "a": 2}, result={"sum": 5, "note": "héllo ✓"}, latency_ms=4)
STEPS = [
    ThinkingData(iteration=1),
    ToolCallData(name="calc__add", arguments={"b": 3, "a": 2}),
    ToolResultData(name="calc__add", result={"sum": 5, "note": "héllo ✓"}, error=None, latency_ms=4),
    ThinkingData(iteration=2),
]
DONE = DoneData(output={"answer": 5, "text": "line one\nline two"}, usage=USAGE, tool_calls=[CALL])
FAILED = ErrorData(code="llm_provider_error", message="openai answered 500", status=502, usage=USAGE)
LOST = ErrorData(code="timeout", message="the run did not finish in time", status=504)  # no usage: the gateway's


def wire(data: Any) -> tuple[str, dict[str, Any], RunProgress]:
    """A progress message as the runner publishes it: its kind, its raw `data` and what the gateway reads."""
    raw = orjson.loads(progress_of(RUN, data).model_dump_json())
    return raw["event"], raw["data"], run_progress.validate_python(raw)


async def body_of(frames: AsyncIterator[ServerSentEvent]) -> tuple[bytes, httpx.Headers]:
    async def endpoint(request: Request) -> Response:
        return sse.response(frames, {"X-Run-Id": RUN})

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/")
    return response.content, response.headers


async def relayed(messages: list[RunProgress]) -> AsyncIterator[RunProgress]:
    for message in messages:
        yield message


async def test_api_run_frames_are_event_and_data_lines_with_the_run_id_first() -> None:
    for ending in (DONE, FAILED, LOST):
        messages = [wire(d) for d in [*STEPS, ending]]

        async def frames(messages: list[tuple[str, dict[str, Any], RunProgress]] = messages) -> AsyncIterator[Any]:
            for _, _, progress in messages:
                yield progress_frame(RUN, progress)

        body, headers = await body_of(frames())
        expected = b"".join(
            b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"run_id": RUN, **data}) + b"\n\n"
            for kind, data, _ in messages
        )
        assert body == expected
        assert headers["content-type"].startswith("text/event-stream") and headers["cache-control"] == "no-cache"
        assert headers["x-run-id"] == RUN
    assert b'"usage"' not in body  # the gateway's own timeout has no usage, as before


async def test_openai_chunks_are_data_lines_with_progress_as_comments_then_done() -> None:
    messages = [wire(d) for d in [*STEPS, DONE]]
    body, _ = await body_of(chunks(RUN, "calc", relayed([p for _, _, p in messages]), include_usage=True))
    frames = body.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    comments = [f for f in frames if f.startswith(b": ")]
    assert comments == [b": " + kind.encode() + b" " + orjson.dumps(data) for kind, data, _ in messages[:-1]]
    chunk_bodies = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-2] if f.startswith(b"data: ")]
    created = chunk_bodies[0]["created"]

    def chunk(delta: Any, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return {
            "id": RUN, "object": "chat.completion.chunk", "created": created, "model": "calc",
            "system_fingerprint": None, "choices": choices, "usage": usage,
        }  # fmt: skip

    usage = CompletionUsage(prompt_tokens=12, completion_tokens=7, total_tokens=19).model_dump()
    expected = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": orjson.dumps(DONE.output).decode()}),
        chunk({}, finish="stop"),
        chunk(None, usage=usage),
    ]
    assert [orjson.dumps(c) for c in chunk_bodies] == [orjson.dumps(c) for c in expected]
    # Every frame is one line: a multi-line output is escaped inside the JSON, never split into `data:` lines.
    assert all(b"\n" not in f for f in frames)


async def test_an_openai_stream_that_fails_ends_with_the_error_as_a_data_line() -> None:
    messages = [wire(d) for d in [STEPS[0], FAILED]]
    body, _ = await body_of(chunks(RUN, "calc", relayed([p for _, _, p in messages]), include_usage=False))
    last = body.split(b"\n\n")[-2]
    error = orjson.loads(last.removeprefix(b"data: "))["error"]
    assert last.startswith(b"data: ") and error["code"] == "llm_provider_error"
    assert error["message"] == "openai answered 500" and b"[DONE]" not in body
