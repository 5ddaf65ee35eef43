"""What every provider adapter speaks: a provider-neutral chat, and one HTTP call with retries and error mapping.

Errors become `ProviderFailed` with a stable code: 401/403 → `llm_auth_error`; 429/5xx and connection
failures are retried with exponential backoff while the run's deadline allows, then `llm_provider_error`;
an answer slower than `llm_timeout_s` → `llm_timeout`.

Its message is fixed text of ours naming the provider and what happened (`anthropic answered 401`): that is
all a caller is told. The provider's own error text ("model not found") is useful to the endpoint's owner, but
a provider may echo the API key in it — whole, upper-cased or cut short — so it travels apart, as `detail`,
with every fragment of the key removed (`redact`), to the run's record and `run.failed` only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from yarl import URL

from agentry_common.errors import UpstreamFailed
from agentry_common.events import PROVIDER_SAID
from agentry_common.netguard import UrlNotAllowed

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
FRAGMENT = 8  # characters of a key that count as a leak


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
    proxy: URL | None = None  # a platform provider's, from the environment; never for a user-supplied URL
    proxy_auth: aiohttp.BasicAuth | None = None


class Provider(Protocol):
    name: str

    async def complete(self, request: ChatRequest, conn: Connection, deadline: float) -> Completion:
        """One LLM call; `deadline` is the run's deadline on the event loop clock."""
        ...


class ProviderFailed(UpstreamFailed):
    """A failed LLM call. `message` is ours and safe for anyone; `detail`, the provider's own words with the
    key redacted, is for the endpoint's owner (see `agentry_common.events.RunError`)."""

    def __init__(self, message: str, *, code: str = "llm_provider_error", detail: str = ""):
        super().__init__(message, code=code)
        self.detail = detail

    def for_owner(self) -> str:
        return f"{self.message}{PROVIDER_SAID}{self.detail}" if self.detail else self.message


def provider_error(message: str) -> ProviderFailed:
    return ProviderFailed(message)


def redact(text: str, secret: str | None) -> str:
    """`text` without any run of FRAGMENT consecutive characters of `secret`, compared case-insensitively:
    a provider that echoes the key upper-cased, cut short or inside other text leaks none of it."""
    if not secret or not text:
        return text
    n = min(FRAGMENT, len(secret))
    grams = {secret[i : i + n].lower() for i in range(len(secret) - n + 1)}
    # Lower-cased character by character, so indices still match `text` (a few characters lower to two).
    low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    hidden = [False] * len(text)
    for i in range(len(text) - n + 1):
        if low[i : i + n] in grams:
            hidden[i : i + n] = [True] * n
    out: list[str] = []
    for i, c in enumerate(text):
        if not hidden[i]:
            out.append(c)
        elif i == 0 or not hidden[i - 1]:
            out.append(REDACTED)
    return "".join(out)


def _provider_detail(body: bytes, api_key: str | None) -> str:
    """The provider's own error text (useful: "model not found"), short, without any fragment of the key."""
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        text = str(err.get("message", "")) if isinstance(err, dict) else str(err or "")
    except ValueError:
        text = body[:1000].decode(errors="replace")  # a proxy's HTML page, say: still worth showing the owner
    return redact(" ".join(text.split()), api_key)[:300]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value or "0"))
    except ValueError:
        return 0.0


class _Retryable(Exception):
    """A failure worth another try (no connection, 429, 5xx), with what to say if it was the last."""

    def __init__(self, failure: str, detail: str, retry_after: float):
        super().__init__(failure)
        self.failure, self.detail, self.retry_after = failure, detail, retry_after


def _failed(state: RetryCallState) -> _Retryable:
    assert state.outcome is not None
    failed = state.outcome.exception()
    assert isinstance(failed, _Retryable)
    return failed


async def post_json(
    conn: Connection, provider: str, url: str, headers: dict[str, str], body: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """POST a JSON body and return the JSON answer, retrying what is worth retrying before `deadline`:
    `max_retries` times at most, after `backoff_s` doubling each time, or the provider's `Retry-After` if longer,
    and never a retry that could not start before the deadline. `provider` names it in error messages."""
    loop = asyncio.get_running_loop()
    content = orjson.dumps(body)
    headers = {"content-type": "application/json", **headers}
    timeout = aiohttp.ClientTimeout(total=conn.timeout_s)

    def delay(state: RetryCallState) -> float:
        return max(conn.backoff_s * 2.0 ** (state.attempt_number - 1), _failed(state).retry_after)

    def give_up(state: RetryCallState) -> bool:  # (tenacity computes the delay first: `upcoming_sleep`)
        return state.attempt_number > conn.max_retries or loop.time() + state.upcoming_sleep >= deadline

    def gave_up(state: RetryCallState) -> NoReturn:
        failed = _failed(state)
        raise ProviderFailed(f"{failed.failure}; gave up after {state.attempt_number} attempts", detail=failed.detail)

    def before_retry(state: RetryCallState) -> None:
        log.info("LLM call failed (%s); retry %d in %.2fs", _failed(state).failure, state.attempt_number,
                 state.upcoming_sleep)  # fmt: skip

    # The first try goes without tenacity: its bookkeeping costs 40-90 us per call (measured here, most of it
    # `inspect` checks on every hook), on every run's critical path, where a whole aiohttp call costs ~160 us.
    # Its failure is replayed as tenacity's first attempt, so the policy above sees every attempt.
    first: _Retryable | None
    try:
        return await _post_once(conn, provider, url, headers, content, timeout)
    except _Retryable as failed:
        first = failed

    async def attempt() -> dict[str, Any]:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await _post_once(conn, provider, url, headers, content, timeout)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(_Retryable), wait=delay, stop=give_up, retry_error_callback=gave_up,
        before_sleep=before_retry,
    )  # fmt: skip
    result: dict[str, Any] = await retrying(attempt)
    return result


async def _post_once(
    conn: Connection, provider: str, url: str, headers: dict[str, str], content: bytes, timeout: aiohttp.ClientTimeout
) -> dict[str, Any]:
    """One POST: the JSON answer, `ProviderFailed` for what no retry can change, `_Retryable` for the rest."""
    retry_after = 0.0
    try:
        async with conn.client.post(
            url, data=content, headers=headers, timeout=timeout, allow_redirects=False, proxy=conn.proxy,
            proxy_auth=conn.proxy_auth,
        ) as resp:  # fmt: skip
            status, answer = resp.status, await resp.read()
            retry_after = _retry_after(resp.headers.get("retry-after"))
    except TimeoutError:
        raise ProviderFailed(f"{provider} did not answer within {conn.timeout_s:g} s", code="llm_timeout") from None
    except UrlNotAllowed as err:
        raise ProviderFailed(err.message, code="url_not_allowed") from None
    except (aiohttp.ClientError, OSError) as err:
        raise _Retryable(f"could not reach {provider} ({type(err).__name__})", "", retry_after) from None
    if status < 300:
        try:
            data = orjson.loads(answer)
        except ValueError:
            raise provider_error(f"{provider} answered with invalid JSON") from None
        if not isinstance(data, dict):
            raise provider_error(f"{provider} answered with an unexpected body")
        return data
    failure, detail = f"{provider} answered {status}", _provider_detail(answer, conn.api_key)
    if status in (401, 403) or (status == 400 and b"API_KEY_INVALID" in answer):
        raise ProviderFailed(failure, code="llm_auth_error", detail=detail)
    if status != 429 and status < 500:
        raise ProviderFailed(failure, detail=detail)
    raise _Retryable(failure, detail, retry_after)
