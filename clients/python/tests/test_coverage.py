"""The SDK stays in step with the API: every route of the gateway's OpenAPI document has an SDK method (on both
clients), and every field of the objects the SDK reads is declared on its model."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from agentry import AsyncClient, Client, models
from agentry._ops import COVERED
from agentry_gateway.entrypoints.api import app

# Routes no SDK method serves on purpose, each with its reason.
NOT_IN_SDK: dict[tuple[str, str], str] = {
    ("POST", "/api/payments/stripe/webhook"): "Stripe's callback, signed by Stripe: no owner or caller sends it",
}

# SDK operations for routes in the contract (ARCHITECTURE.md §3) that this gateway may not serve yet; they must
# not count as gone. Once the gateway serves them, the route check and `ROUTE_MODELS` cover them like any other.
AHEAD_OF_THE_API: dict[tuple[str, str], str] = {
    ("GET", "/api/usage"): "Usage and spend controls",
    ("GET", "/api/balance/alerts"): "Usage and spend controls",
    ("PUT", "/api/balance/alerts"): "Usage and spend controls",
}

# SDK model → the OpenAPI schema it reads. A new response object needs a line here and a model in models.py.
MODELS: dict[type[models.Model], str] = {
    models.Workspace: "WorkspacePublic",
    models.Server: "ServerPublic",
    models.Endpoint: "EndpointPublic",
    models.EndpointCreated: "EndpointCreated",
    models.Usage: "Usage",
    models.RunResult: "RunResult",
    models.RunAccepted: "RunAccepted",
    models.RunStatus: "RunStatus",
    models.ToolCall: "ToolCall",
    models.Charge: "Charge",
    models.Run: "RunHistoryItem",
    models.RunPage: "RunHistory",
    models.Balance: "Balance",
    models.Transaction: "Transaction",
    models.TransactionPage: "TransactionPage",
    models.Deposited: "Deposited",
    models.ToolInfo: "ToolInfo",
    models.Key: "KeyPublic",
    models.KeyCreated: "KeyCreated",
    models.Webhook: "WebhookInfo",
    models.WebhookCreated: "CreatedWebhook",
    models.Delivery: "Delivery",
    models.DeliveryAttempt: "DeliveryAttempt",
    models.DeliveryPage: "DeliveryPage",
    models.DepositRecord: "DepositRecord",
    models.DepositStarted: "DepositStarted",
    models.AutoRecharge: "AutoRecharge",
}

# Models of routes named by the contract before the gateway serves them: checked against the schema of the route's
# 200 answer (whatever its name) once the route exists, skipped until then.
ROUTE_MODELS: dict[type[models.Model], tuple[str, str]] = {
    models.UsageReport: ("GET", "/api/usage"),
    models.BalanceAlerts: ("GET", "/api/balance/alerts"),
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return app.openapi()


def test_every_route_of_the_api_has_an_sdk_method(openapi: dict[str, Any]) -> None:
    # The public API; health, readiness, metrics and docs are for operators, not SDK users.
    public = {path: ops for path, ops in openapi["paths"].items() if path.startswith(("/api/", "/v1/"))}
    routes = {(method.upper(), path) for path, ops in public.items() for method in ops}
    missing = routes - set(COVERED) - set(NOT_IN_SDK)
    assert not missing, f"routes without an SDK operation (add one to agentry/_ops.py): {sorted(missing)}"
    gone = set(COVERED) - routes - set(AHEAD_OF_THE_API)
    assert not gone, f"SDK operations for routes the API no longer has: {sorted(gone)}"


def test_both_clients_have_a_method_for_every_operation() -> None:
    for name in COVERED.values():
        assert callable(getattr(Client, name, None)), f"Client.{name} is missing"
        method = getattr(AsyncClient, name, None)
        assert method is not None and inspect.iscoroutinefunction(method), f"AsyncClient.{name} is missing"


@pytest.mark.parametrize("model", list(MODELS), ids=lambda m: m.__name__)
def test_every_field_the_api_answers_is_declared_on_the_sdk_model(
    openapi: dict[str, Any], model: type[models.Model]
) -> None:
    schema = openapi["components"]["schemas"][MODELS[model]]
    missing = set(schema.get("properties", {})) - set(model.model_fields)
    assert not missing, f"{MODELS[model]} has fields {sorted(missing)} that agentry.models.{model.__name__} lacks"


@pytest.mark.parametrize("model", list(ROUTE_MODELS), ids=lambda m: m.__name__)
def test_models_of_routes_ahead_of_the_api_declare_what_it_answers_once_served(
    openapi: dict[str, Any], model: type[models.Model]
) -> None:
    method, path = ROUTE_MODELS[model]
    operation = openapi["paths"].get(path, {}).get(method.lower())
    if operation is None:
        pytest.skip(f"{method} {path} is not served by this gateway yet")
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    missing = set(schema.get("properties", {})) - set(model.model_fields)
    assert not missing, f"{method} {path} answers fields {sorted(missing)} that agentry.models.{model.__name__} lacks"
