"""The one error type every service raises; it carries its HTTP status and renders the public error body."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case error code, e.g. `rate_limited`.")
    message: str = Field(description="Human-readable explanation. Never contains a secret.")


class ErrorBody(BaseModel):
    """Every error response has this body: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


class AgentryError(Exception):
    """Base error. Subclasses fix the HTTP status and a default code; instances may refine the code."""

    status_code: ClassVar[int] = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(AgentryError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AgentryError):
    status_code = 401
    code = "unauthorized"


class PaymentRequired(AgentryError):
    status_code = 402
    code = "payment_required"


class Forbidden(AgentryError):
    status_code = 403
    code = "forbidden"


class NotFound(AgentryError):
    status_code = 404
    code = "not_found"


class Conflict(AgentryError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AgentryError):
    status_code = 413
    code = "payload_too_large"


class ValidationFailed(AgentryError):
    status_code = 422
    code = "validation_error"


class RateLimited(AgentryError):
    status_code = 429
    code = "rate_limited"


class UpstreamFailed(AgentryError):
    status_code = 502
    code = "llm_provider_error"


class ServiceUnavailable(AgentryError):
    status_code = 503
    code = "service_unavailable"


class Timeout(AgentryError):
    status_code = 504
    code = "timeout"


_BY_STATUS: dict[int, type[AgentryError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        PaymentRequired,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ValidationFailed,
        RateLimited,
        UpstreamFailed,
        ServiceUnavailable,
        Timeout,
    )
}


def error_from(status_code: int, code: str, message: str) -> AgentryError:
    """Rebuild an error that crossed a process boundary (an RPC reply) with its status and code intact."""
    cls = _BY_STATUS.get(status_code, AgentryError)
    return cls(message, code=code)
