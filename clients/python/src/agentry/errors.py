"""Typed errors: one class per HTTP status the API answers, each carrying the API's stable error `code`."""

from __future__ import annotations

from typing import Any


class AgentryError(Exception):
    """Any error the API answered (or the connection to it). `code` is the API's snake_case error code."""

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.body = body

    @property
    def run_id(self) -> str | None:
        """The run this error belongs to, when one was started (`X-Run-Id`)."""
        return self.headers.get("x-run-id") or self.headers.get("X-Run-Id")

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.status == 0 else f"{self.status} {self.code}: {self.message}"


class APIConnectionError(AgentryError):
    """The API could not be reached (no answer, connection refused, TLS failure)."""


class BadRequestError(AgentryError):
    status = 400


class AuthenticationError(AgentryError):
    status = 401


class PaymentRequiredError(AgentryError):
    """A spend cap or budget is reached (402)."""

    status = 402


class PermissionDeniedError(AgentryError):
    status = 403


class NotFoundError(AgentryError):
    status = 404


class ConflictError(AgentryError):
    status = 409


class PayloadTooLargeError(AgentryError):
    status = 413


class UnprocessableError(AgentryError):
    """Invalid input (422); the message names the field."""

    status = 422


class RateLimitError(AgentryError):
    status = 429

    @property
    def retry_after(self) -> int | None:
        """Seconds to wait before the next attempt, from `Retry-After`."""
        value = self.headers.get("retry-after") or self.headers.get("Retry-After")
        return int(value) if value and value.isdigit() else None


class UpstreamError(AgentryError):
    """The LLM provider failed or answered something unusable (502)."""

    status = 502


class ServiceUnavailableError(AgentryError):
    status = 503


class RunTimeoutError(AgentryError):
    status = 504


_BY_STATUS: dict[int, type[AgentryError]] = {
    cls.status: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PaymentRequiredError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        PayloadTooLargeError,
        UnprocessableError,
        RateLimitError,
        UpstreamError,
        ServiceUnavailableError,
        RunTimeoutError,
    )
}


def error_for(status: int, body: Any, headers: dict[str, str] | None = None) -> AgentryError:
    """The typed error for an API answer: its status picks the class, its body gives code and message."""
    detail = body.get("error") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    code = str(detail.get("code") or "http_error")
    message = str(detail.get("message") or f"HTTP {status}")
    cls = _BY_STATUS.get(status, AgentryError)
    return cls(message, code=code, status=status, headers=headers, body=body)
