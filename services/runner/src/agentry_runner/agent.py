"""The agent loop: system prompt (+ earlier conversation turns) + input → LLM; while the model asks for tools and
the budget allows, call them (in parallel), feed the results back and infer again. `iterations` counts LLM calls.

When `max_tool_calls` is spent the tools stay declared but the model is told not to call them, so its next
answer is final. A JSON answer that does not parse or validate gets one corrective re-ask, then the run
fails with `invalid_output`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import SpanKind

from agentry_common import tracing
from agentry_common.errors import AgentryError, UpstreamFailed
from agentry_common.events import (
    ChatTurn,
    EndpointSnapshot,
    ProgressData,
    ThinkingData,
    ToolCall,
    ToolCallData,
    ToolResultData,
)

from . import metrics, output
from .providers import ChatRequest, Completion, Connection, Message, Provider, ToolRequest
from .tools import Toolbox

Emit = Callable[[ProgressData], Awaitable[None]]
LIMIT_REACHED = "not called: the run's tool call limit (max_tool_calls) is reached"
# A tool may return megabytes. The model reads up to MODEL_RESULT_CHARS of it; the run record, the progress
# events and the history keep RECORD_RESULT_CHARS, which keeps every message under NATS's payload limit.
MODEL_RESULT_CHARS = 100_000
RECORD_RESULT_CHARS = 8_000


@dataclass
class RunState:
    """What the run has consumed and done so far; kept outside the loop so a timeout still reports it."""

    tokens_input: int = 0
    tokens_output: int = 0
    iterations: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)


async def _silent(data: ProgressData) -> None:
    return None


def input_text(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [truncated: {len(text)} characters in all]"


def result_text(call: ToolCall, limit: int = MODEL_RESULT_CHARS) -> str:
    if call.error is not None:
        return clip(f"error: {call.error}", limit)
    text = call.result if isinstance(call.result, str) else orjson.dumps(call.result, default=str).decode()
    return clip(text, limit)


def recorded(call: ToolCall) -> ToolCall:
    """The call as the run keeps it: a result too large to keep becomes its clipped text."""
    update: dict[str, Any] = {}
    if call.error is not None and len(call.error) > RECORD_RESULT_CHARS:
        update["error"] = clip(call.error, RECORD_RESULT_CHARS)
    if call.result is not None and len(result_text(call, RECORD_RESULT_CHARS + 1)) > RECORD_RESULT_CHARS:
        update["result"] = result_text(call, RECORD_RESULT_CHARS)
    return call.model_copy(update=update) if update else call


@dataclass
class Agent:
    provider: Provider
    conn: Connection
    toolbox: Toolbox
    deadline: float  # event-loop clock
    state: RunState
    emit: Emit = _silent

    async def run(
        self, endpoint: EndpointSnapshot, value: str | dict[str, Any], history: Sequence[ChatTurn] = ()
    ) -> Any:
        """The run's output: text, or the parsed JSON value for `output_format: json`.

        `history` (earlier turns of an OpenAI-compatible conversation) goes between the endpoint's system
        prompt and the input; the endpoint's own system prompt stays the only system message."""
        system = output.system_prompt(endpoint)
        messages = [Message(turn.role, turn.content) for turn in history]
        messages.append(Message("user", input_text(value)))
        reasked = False
        while True:
            allow_tools = len(self.state.tool_calls) < endpoint.max_tool_calls
            completion = await self._infer(endpoint, system, messages, allow_tools)
            if completion.tool_calls and allow_tools:
                await self._use_tools(endpoint, completion, messages)
                continue
            if endpoint.output_format != "json":
                return completion.text
            try:
                return output.parse_json(completion.text, endpoint.output_schema)
            except output.InvalidOutput as problem:
                if reasked or isinstance(problem, output.InvalidSchema):
                    message = f"the model's answer was rejected: {problem}"
                    raise UpstreamFailed(message, code="invalid_output") from None
                reasked = True
                # Text only: a tool request the model made against instructions must not need a tool result.
                messages.append(Message("assistant", completion.text or "(empty answer)"))
                messages.append(Message("user", output.corrective_prompt(str(problem), endpoint.output_schema)))

    async def _infer(
        self, endpoint: EndpointSnapshot, system: str, messages: list[Message], allow_tools: bool
    ) -> Completion:
        self.state.iterations += 1
        await self.emit(ThinkingData(iteration=self.state.iterations))
        request = ChatRequest(
            model=endpoint.llm_model,
            system=system,
            messages=messages,
            tools=self.toolbox.specs,
            max_tokens=endpoint.max_tokens,
            temperature=endpoint.temperature,
            json_mode=endpoint.output_format == "json",
            output_schema=endpoint.output_schema,
            allow_tools=allow_tools,
        )
        provider = self.provider.name
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": endpoint.llm_model,
            "agentry.iteration": self.state.iterations,
        }
        started = time.perf_counter()
        outcome = "ok"
        try:
            with tracing.span(f"chat {endpoint.llm_model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
                try:
                    completion = await self.provider.complete(request, self.conn, self.deadline)
                except AgentryError as err:
                    outcome = err.code
                    tracing.fail(span, err.code)
                    raise
                span.set_attribute("gen_ai.usage.input_tokens", completion.tokens_input)
                span.set_attribute("gen_ai.usage.output_tokens", completion.tokens_output)
        except BaseException:
            if outcome == "ok":
                outcome = "cancelled"  # the run's deadline (or a shutdown) cut the call short
            raise
        finally:
            model = metrics.model_label(provider, endpoint.llm_model)
            metrics.LLM_CALL_SECONDS.labels(provider, model, outcome).observe(time.perf_counter() - started)
        self.state.tokens_input += completion.tokens_input
        self.state.tokens_output += completion.tokens_output
        return completion

    async def _use_tools(self, endpoint: EndpointSnapshot, completion: Completion, messages: list[Message]) -> None:
        messages.append(
            Message(
                "assistant",
                completion.text,
                tool_calls=completion.tool_calls,
                raw=completion.raw,
                provider=self.provider.name,
            )
        )
        budget = endpoint.max_tool_calls - len(self.state.tool_calls)
        granted = completion.tool_calls[:budget]
        calls = await asyncio.gather(*(self._call(request) for request in granted))
        self.state.tool_calls.extend(recorded(c) for c in calls)  # in the model's order, not finishing order
        for request, call in zip(granted, calls, strict=True):
            messages.append(
                Message(
                    "tool",
                    result_text(call),
                    tool_call_id=request.id,
                    name=request.name,
                    is_error=call.error is not None,
                )
            )
        for request in completion.tool_calls[budget:]:
            messages.append(Message("tool", LIMIT_REACHED, tool_call_id=request.id, name=request.name, is_error=True))

    async def _call(self, request: ToolRequest) -> ToolCall:
        await self.emit(ToolCallData(name=request.name, arguments=request.arguments))
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": request.name}
        with tracing.span(f"execute_tool {request.name}", attributes=attributes) as span:
            if request.arguments_error is not None:
                error = f"invalid arguments: {request.arguments_error}"
                call = ToolCall(name=request.name, arguments={}, error=error)
            else:
                call = await self.toolbox.call(request.name, request.arguments)
            if call.error is not None:
                tracing.fail(span, "tool_error")
        kept = recorded(call)
        await self.emit(
            ToolResultData(name=kept.name, result=kept.result, error=kept.error, latency_ms=kept.latency_ms)
        )
        return call
