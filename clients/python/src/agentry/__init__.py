"""Agentry's Python SDK: `Client` / `AsyncClient` for the public HTTP API, typed models and errors.

from agentry import Client
with Client("http://127.0.0.1:8080", token=jwt) as agentry:
    ws = agentry.create_workspace("Acme")
    created = agentry.create_endpoint(ws.id, "parser", "Parse invoices.", llm_provider="mock")
    print(agentry.run(created.endpoint.slug, "Invoice #42", api_key=created.api_key).output)
"""

from . import models
from .client import AsyncClient, Client
from .errors import (
    AgentryError,
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    RunTimeoutError,
    ServiceUnavailableError,
    UnprocessableError,
    UpstreamError,
)

__all__ = [
    "APIConnectionError",
    "AgentryError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunTimeoutError",
    "ServiceUnavailableError",
    "UnprocessableError",
    "UpstreamError",
    "models",
]
