"""What every provider adapter speaks: a provider-neutral chat, and one HTTP call with retries and error mapping.

Errors become `UpstreamFailed` with a stable code: 401/403 → `llm_auth_error`; 429/5xx and connection
failures are retried with exponential backoff while the run's deadline allows, then `llm_provider_error`;
an answer slower than `llm_timeout_s` → `llm_timeout`. Messages never carry the API key or request body.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from agentry_common.errors import UpstreamFailed
from agentry_common.netguard import UrlNotAllowed

log = logging.getLogger(__name__)


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ToolRequest:
    id: str
    name: str
    arguments: dict[str, Any]
    arguments_error: str | None = None  # the model sent arguments that are not a JSON object


@dataclass
class Message:
    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolRequest] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    # The assistant turn as the provider sent it, replayed verbatim to that provider (thought signatures,
    # thinking blocks), so a tool round trip loses nothing the provider needs.
    raw: Any = None
    provider: str | None = None


@dataclass
class ChatRequest:
    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int
    temperature: float
    json_mode: bool = False
    output_schema: dict[str, Any] | None = None  # also in the system prompt; adapters may use it natively
    # False: the tools stay declared (the history references them) but the model must answer in text.
    allow_tools: bool = True


@dataclass
class Completion:
    text: str
    tool_calls: list[ToolRequest]
    tokens_input: int
    tokens_output: int
    raw: Any = None


@dataclass
class Connection:
    """Where and how one run reaches its provider."""

    client: aiohttp.ClientSession
    base_url: str
    api_key: str | None
    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 0.5


class Provider(Protocol):
    name: str

    async def complete(self, request: ChatRequest, conn: Connection, deadline: float) -> Completion:
        """One LLM call; `deadline` is the run's deadline on the event loop clock."""
        ...


def provider_error(message: str) -> UpstreamFailed:
    return UpstreamFailed(message, code="llm_provider_error")


def _provider_message(body: bytes, api_key: str | None) -> str:
    """The provider's own error text (useful: "model not found"), without any echo of the key, short."""
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        text = str(err.get("message", "")) if isinstance(err, dict) else str(err or "")
    except ValueError:
        text = ""
    if api_key:
        text = text.replace(api_key, "[redacted]")
    return text[:300]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value or "0"))
    except ValueError:
        return 0.0


async def post_json(
    conn: Connection, url: str, headers: dict[str, str], body: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """POST a JSON body and return the JSON answer, retrying what is worth retrying before `deadline`."""
    loop = asyncio.get_running_loop()
    content = orjson.dumps(body)
    headers = {"content-type": "application/json", **headers}
    timeout = aiohttp.ClientTimeout(total=conn.timeout_s)
    attempt = 0
    while True:
        retry_after = 0.0
        failure: str
        try:
            async with conn.client.post(
                url, data=content, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                status, answer = resp.status, await resp.read()
                retry_after = _retry_after(resp.headers.get("retry-after"))
        except TimeoutError:
            raise UpstreamFailed(
                f"the LLM provider did not answer within {conn.timeout_s:g} s", code="llm_timeout"
            ) from None
        except UrlNotAllowed as err:
            raise UpstreamFailed(err.message, code="url_not_allowed") from None
        except (aiohttp.ClientError, OSError) as err:
            failure = f"could not reach the LLM provider ({type(err).__name__})"
        else:
            if status < 300:
                try:
                    data = orjson.loads(answer)
                except ValueError:
                    raise provider_error("the LLM provider answered with invalid JSON") from None
                if not isinstance(data, dict):
                    raise provider_error("the LLM provider answered with an unexpected body")
                return data
            detail = _provider_message(answer, conn.api_key)
            if status in (401, 403) or (status == 400 and b"API_KEY_INVALID" in answer):
                raise UpstreamFailed(f"the LLM provider rejected the API key (HTTP {status})", code="llm_auth_error")
            if status != 429 and status < 500:
                raise provider_error(f"the LLM provider refused the request (HTTP {status}): {detail}".rstrip(": "))
            failure = f"the LLM provider failed (HTTP {status})"
        delay = max(conn.backoff_s * 2**attempt, retry_after)
        if attempt >= conn.max_retries or loop.time() + delay >= deadline:
            raise provider_error(f"{failure}; gave up after {attempt + 1} attempts")
        attempt += 1
        log.info("LLM call failed (%s); retry %d in %.2fs", failure, attempt, delay)
        await asyncio.sleep(delay)
