"""Request/reply between services over core NATS, with errors that keep their HTTP status across the hop.

A reply is `{"ok": true, "result": {...}}` or `{"ok": false, "error": {"status", "code", "message"}}`.
Servers are FastStream subscribers in a queue group wrapped with `@serve`; clients use `call`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import orjson
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from . import db, tracing
from .errors import AgentryError, ServiceUnavailable, error_from

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R", bound=BaseModel)


def serve(fn: Callable[P, Awaitable[BaseModel | None]]) -> Callable[P, Awaitable[dict[str, Any]]]:
    """Wrap a request handler so its result or its `AgentryError` becomes a reply envelope."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        try:
            result = await fn(*args, **kwargs)
        except AgentryError as err:
            return {"ok": False, "error": {"status": err.status_code, "code": err.code, "message": err.message}}
        except db.UNAVAILABLE as err:
            log.warning("request handler %s: database unavailable (%s)", fn.__name__, type(err).__name__)
            message = "the database is unavailable; try again"
            return {"ok": False, "error": {"status": 503, "code": "database_unavailable", "message": message}}
        except Exception:
            log.exception("request handler %s failed", fn.__name__)
            return {"ok": False, "error": {"status": 500, "code": "internal_error", "message": "internal error"}}
        return {"ok": True, "result": None if result is None else result.model_dump(mode="json")}

    # FastStream parses arguments from the handler's signature; the reply is our envelope, not its return type.
    signature = inspect.signature(fn, eval_str=True)
    wrapper.__signature__ = signature.replace(return_annotation=dict)  # type: ignore[attr-defined]
    return wrapper


async def call(
    nc: Client,
    subject: str,
    request: BaseModel,
    reply_type: type[R],
    *,
    timeout: float = 3.0,
    unavailable: str = "a backing service is unavailable",
) -> R:
    """Ask the service behind `subject`; raise its error as ours, or 503 when nobody answers in time."""
    attributes = {"messaging.system": "nats", "messaging.destination.name": subject}
    with tracing.span(subject, kind=SpanKind.CLIENT, attributes=attributes):  # how long the hop took, in the trace
        try:
            msg = await nc.request(subject, request.model_dump_json().encode(), timeout=timeout)
        except (NoRespondersError, NatsTimeout) as err:
            raise ServiceUnavailable(unavailable, code="service_unavailable") from err
    reply = orjson.loads(msg.data)
    if not reply.get("ok"):
        e = reply.get("error") or {}
        raise error_from(int(e.get("status", 500)), str(e.get("code", "internal_error")), str(e.get("message")))
    return reply_type.model_validate(reply["result"])
