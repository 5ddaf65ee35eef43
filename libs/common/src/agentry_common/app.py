"""The HTTP shell every service shares: lifespan (logging, tracing, broker, streams, the service's container),
health, readiness, metrics, request telemetry, errors."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from faststream.nats import NatsBroker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import db
from .broker import ensure_streams
from .container import CONTAINER, ServiceContainer
from .errors import AgentryError, ErrorBody
from .logging import setup_logging
from .metrics import metrics_response
from .settings import ServiceSettings
from .telemetry import RequestMetrics, untraced
from .tracing import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _one(error: Any) -> str:
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    path = _field_path(tuple(error.get("loc", ())))
    # A model-level check has no field path of its own; its message starts with the field it is about.
    return msg if path == "body" and error.get("type") == "value_error" else f"{path}: {msg}"


def validation_message(errors: list[Any]) -> str:
    return "; ".join(_one(e) for e in errors)


def json_syntax_message(error: Any, doc: Any) -> str:
    """FastAPI reports a JSON syntax error as `loc: ("body", <offset>)`; say what and where, in words."""
    what = str((error.get("ctx") or {}).get("error") or "invalid JSON")
    pos = error["loc"][1] if len(error.get("loc", ())) > 1 and isinstance(error["loc"][1], int) else None
    if pos is None or not isinstance(doc, str):
        return f"body: not valid JSON ({what})"
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    return f"body: not valid JSON: {what} at line {line}, column {column}"


# The deepest nesting of arrays and objects a body may have. Python's JSON parser and validators recurse once per
# level (a RecursionError near 1000 would be a 500), and orjson, which puts values on the bus, stops at 255.
MAX_JSON_DEPTH = 64
TOO_DEEP_TEXT = f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"


# What FastAPI raises (HTTPException 400) for a body its JSON parser cannot even decode.
FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"


def error_response(err: Exception) -> Response:
    """The response for an error a handler raised: ours (AgentryError), the database's, or a bug (500)."""
    if isinstance(err, AgentryError):
        return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers)
    if isinstance(err, db.UNAVAILABLE):
        # Rendered here, not as an unhandled error: that 500 also makes uvicorn drop the keep-alive connection,
        # failing whatever request the client sends on it next.
        log.warning("database unavailable: %s", type(err).__name__)
        body = {"error": {"code": "database_unavailable", "message": "the database is unavailable; try again"}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    log.error("unhandled error", exc_info=err)
    return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    async def _rendered(_: Request, err: Exception) -> Response:
        return error_response(err)

    app.add_exception_handler(AgentryError, _rendered)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> Response:
        errors = list(err.errors())
        if len(errors) == 1 and errors[0].get("type") == "json_invalid":
            message = json_syntax_message(errors[0], err.body)
        else:
            message = validation_message(errors)
        return JSONResponse({"error": {"code": "validation_error", "message": message}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> Response:
        if err.status_code == 400 and err.detail == FASTAPI_UNPARSABLE_BODY:
            # FastAPI turns anything raised while it reads and parses a body into this 400; the cause says what.
            cause = err.__cause__
            if isinstance(cause, AgentryError):  # e.g. the body limit, reached by a chunked body: 413
                return error_response(cause)
            if isinstance(cause, RecursionError):
                body = {"error": {"code": "validation_error", "message": f"body: {TOO_DEEP_TEXT}"}}
                return JSONResponse(body, status_code=422)
            # A body that is not even text (not UTF-8): a bad body like any other, 422 as the contract says.
            body = {"error": {"code": "validation_error", "message": "body: not valid JSON text (UTF-8 expected)"}}
            return JSONResponse(body, status_code=422)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        code = codes.get(err.status_code, "http_error")
        body = {"error": {"code": code, "message": str(err.detail)}}
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    for unavailable in db.UNAVAILABLE:
        app.add_exception_handler(unavailable, _rendered)
    app.add_exception_handler(Exception, _rendered)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "Missing or invalid credentials",
        404: "Not found (or not yours)",
        422: "Invalid input; the message names the field",
        503: "A backing service or the broker is unavailable",
    }.items()
}


# Python's cyclic collector, tuned for a long-running service. Its default (a collection per 700 net new
# container objects, and a full one whenever the long-lived objects grow by a quarter) walked the ~200,000
# objects every service holds after its imports on each full collection: ~130 ms each in the runner, 0.13 ms
# of CPU per run in all, and a 130 ms pause for every run in flight (docs/benchmarks.md).
GC_THRESHOLDS = (10_000, 20, 10)


def settle_heap() -> None:
    """Once the service has started: what startup built lives as long as the process, so it is moved out of the
    collector's sight (`gc.freeze`), and young objects are collected less often; objects freed by reference
    counting, nearly all of a request's, never reach the collector anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class ServiceApp(FastAPI):
    """A service's FastAPI app, with an optional front door (`set_front`): an ASGI app that sees each HTTP
    request before any of FastAPI's own layers (its telemetry check, which reads the environment on every
    request, its error and body-limit middlewares, routing) and hands what it does not serve itself to them."""

    _front: ASGIApp | None = None

    def set_front(self, front: Callable[[ASGIApp], ASGIApp]) -> None:
        """`front(behind)`: the front door, given FastAPI's own entry as what it hands requests on to."""
        self._front = front(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is not None and scope["type"] == "http":
            await self._front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_service_app(
    *,
    service: str,
    settings: S,
    broker: NatsBroker,
    container: Callable[[S, NatsBroker], ServiceContainer],
    **fastapi_kwargs: Any,
) -> ServiceApp:
    """Build a service's FastAPI app. In its lifespan the broker connects, the streams are declared, the container
    is built (`container(settings, broker)`) and put where handlers find it, the broker starts (its subscribers
    with it), then the container starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(service, settings.log_level)
        setup_tracing(service)
        await broker.connect()
        await ensure_streams(broker.connection.jetstream(), replicas=settings.stream_replicas)
        parts = container(settings, broker)
        broker.context.set_global(CONTAINER, parts)
        setattr(app.state, CONTAINER, parts)
        await broker.start()
        await parts.start()
        settle_heap()
        log.info("%s started", service)
        try:
            yield
        finally:
            await parts.shutdown()
            await broker.stop()
            await parts.close()
            broker.context.reset_global(CONTAINER)
            shutdown_tracing()

    lifespan_cm: Callable[[FastAPI], AbstractAsyncContextManager[None]] = lifespan
    # FastAPI's native tracing makes the HTTP server spans (once `setup_tracing` installs a provider). Metrics
    # are Prometheus's and logs our JSON lines, and `setup_tracing` alone decides where spans go.
    telemetry = {"exclude": untraced, "metrics": False, "logs": False, "auto_configure": False}
    fastapi_kwargs.setdefault("telemetry", telemetry)
    # /docs with Swagger UI's files served by the service itself, not a CDN: it works offline and behind
    # a firewall, and the page runs no third-party script.
    built = FastAPIOffline(lifespan=lifespan_cm, static_url="/docs/static", **fastapi_kwargs)
    built.__class__ = ServiceApp  # fastapi_offline builds a plain FastAPI; ServiceApp adds methods, no state
    app = cast(ServiceApp, built)
    install_error_handlers(app)
    app.add_middleware(RequestMetrics, service=service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        parts: ServiceContainer = getattr(request.app.state, CONTAINER)
        checks = await parts.checks()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return metrics_response()

    return app
