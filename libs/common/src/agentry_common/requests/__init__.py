"""Request/reply contracts between services (core NATS, see `rpc`). Requests are imperatives.

One module per service that answers them; every contract is importable from here, as it always was.
"""

from __future__ import annotations

from ..events import Contract
from .billing import (
    Balance,
    Charges,
    ChargeStatus,
    Deposit,
    Deposited,
    GetBalance,
    GetCharges,
    GetSpent,
    ListTransactions,
    ReleaseSpend,
    ReserveSpend,
    SpendLimit,
    SpendReserved,
    SpendScope,
    Spent,
    Transaction,
    TransactionPage,
)
from .keys import (
    CreatedKey,
    CreateKey,
    IssuedKey,
    IssueKey,
    KeyFields,
    KeyInfo,
    KeyList,
    KeysUsed,
    ListKeys,
    RevokeKey,
    SpendCapPeriod,
    UpdateKey,
    VerifiedKey,
    VerifyKey,
)
from .runs import GetRun, ListRuns, ListTools, RunPage, RunRecord, ToolInfo, ToolList
from .secrets import DeleteSecret, ResolvedSecret, ResolveSecret, StoredSecret, StoreSecret
from .webhooks import (
    CreatedWebhook,
    CreateWebhook,
    Delivery,
    DeliveryAttempt,
    DeliveryOut,
    DeliveryPage,
    DeliveryRef,
    DeliveryStatus,
    ListDeliveries,
    ListWebhooks,
    UpdateWebhook,
    WebhookEventType,
    WebhookInfo,
    WebhookList,
    WebhookOut,
    WebhookRef,
)


class Done(Contract):
    """A plain acknowledgement, whichever service answers."""

    ok: bool = True


__all__ = [
    "Balance",
    "ChargeStatus",
    "Charges",
    "CreateKey",
    "CreateWebhook",
    "CreatedKey",
    "CreatedWebhook",
    "DeleteSecret",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryOut",
    "DeliveryPage",
    "DeliveryRef",
    "DeliveryStatus",
    "Deposit",
    "Deposited",
    "Done",
    "GetBalance",
    "GetCharges",
    "GetRun",
    "GetSpent",
    "IssueKey",
    "IssuedKey",
    "KeyFields",
    "KeyInfo",
    "KeyList",
    "KeysUsed",
    "ListDeliveries",
    "ListKeys",
    "ListRuns",
    "ListTools",
    "ListTransactions",
    "ListWebhooks",
    "ReleaseSpend",
    "ReserveSpend",
    "ResolveSecret",
    "ResolvedSecret",
    "RevokeKey",
    "RunPage",
    "RunRecord",
    "SpendCapPeriod",
    "SpendLimit",
    "SpendReserved",
    "SpendScope",
    "Spent",
    "StoreSecret",
    "StoredSecret",
    "ToolInfo",
    "ToolList",
    "Transaction",
    "TransactionPage",
    "UpdateKey",
    "UpdateWebhook",
    "VerifiedKey",
    "VerifyKey",
    "WebhookEventType",
    "WebhookInfo",
    "WebhookList",
    "WebhookOut",
    "WebhookRef",
]
