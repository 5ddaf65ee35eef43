"""The wire shapes of the OpenAI-compatible run API (`/v1/*`): OpenAI's Chat Completions, as far as Agentry
serves them. Unknown request fields are accepted and ignored like OpenAI's sampling options are (the endpoint's
own model settings rule); the ones whose meaning Agentry cannot honour are refused (see `openai_compat`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .schemas import UNSTORABLE_TEXT, unstorable


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Only `text` parts are accepted.")
    text: str | None = Field(None, description="The text of a `text` part.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = Field(
        description="`user` and `assistant` turns are accepted; the last message must be `user`. "
        "`system`/`developer` are refused (the endpoint's own system prompt rules), as are tool turns."
    )
    content: str | list[ContentPart] | None = Field(None, description="Text, or a list of text parts.")
    name: str | None = Field(None, max_length=200, description="Accepted and ignored.")
    tool_calls: list[dict[str, Any]] | None = Field(None, description="Refused: the endpoint's tools rule.")
    tool_call_id: str | None = Field(None, description="Refused: the endpoint's tools rule.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = Field(False, description="Send a last chunk with `usage` and no choices.")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=60, description="The endpoint's slug.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000, description="The conversation so far.")
    stream: bool = Field(False, description="Answer as `chat.completion.chunk` server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    n: int | None = Field(None, description="Only 1 is served.")
    tools: list[Any] | None = Field(None, description="Refused when not empty: the endpoint's own tools rule.")
    tool_choice: Any = Field(None, description="Accepted only as `none` or `auto`.")
    functions: list[Any] | None = Field(None, description="Refused when not empty (legacy `tools`).")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        # The conversation reaches events and the run record, as `/api/run`'s input does.
        if isinstance(data, dict) and (unstorable(data.get("messages")) or unstorable(data.get("model"))):
            raise ValueError(f"messages: {UNSTORABLE_TEXT}")
        return data


class CompletionUsage(BaseModel):
    prompt_tokens: int = Field(description="LLM input tokens over all the run's calls.")
    completion_tokens: int = Field(description="LLM output tokens over all the run's calls.")
    total_tokens: int = Field(description="The sum of both.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The run's output (a JSON endpoint's value as JSON text).")
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(description="The run's id (`run_…`), as in run history.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix seconds.")
    model: str = Field(description="The endpoint's slug.")
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class Model(BaseModel):
    id: str = Field(description="The endpoint's slug: what `model` takes.")
    object: Literal["model"] = "model"
    created: int = Field(description="When the endpoint was created (Unix seconds).")
    owned_by: str = Field(description="The endpoint's owner.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="Human-readable explanation. Never contains a secret.")
    type: str = Field(description="OpenAI's error type, e.g. `invalid_request_error`, `rate_limit_error`.")
    code: str | None = Field(description="Agentry's stable snake_case code, e.g. `model_not_found`.")
    param: str | None = Field(None, description="The request field at fault, when one is.")


class OpenAIError(BaseModel):
    """Every error on `/v1/*` has this body, as OpenAI's API answers it."""

    error: OpenAIErrorDetail
