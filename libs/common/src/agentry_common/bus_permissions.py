"""Least privilege on the bus: which subjects each service may publish and subscribe to.

One table, used by the local launcher (so development runs with production's permissions) and checked
against the Kubernetes NATS values by the deploy tests. JetStream's own API (`$JS.API.>`) and reply inboxes
(`_INBOX.>`) are open to every service; application subjects are not.
"""

from __future__ import annotations

import json
from typing import TypedDict

from . import subjects as s


class Permissions(TypedDict):
    publish: list[str]
    subscribe: list[str]


_EVERYONE: Permissions = {"publish": ["$JS.API.>", "_INBOX.>"], "subscribe": ["_INBOX.>"]}

SERVICE_PERMISSIONS: dict[str, Permissions] = {
    "gateway": {
        "publish": [
            s.RUN_REQUESTED,  # only the gateway starts runs
            s.KEYS_ISSUE, s.KEYS_VERIFY, s.KEYS_REVOKE, s.SECRETS_STORE, s.SECRETS_DELETE,
            s.KEYS_CREATE, s.KEYS_LIST, s.KEYS_UPDATE, s.KEYS_USED,  # caller keys
            s.SPEND_RESERVE, s.SPEND_RELEASE, s.SPEND_TOTALS,  # spend caps
            s.WALLET_BALANCE, s.WALLET_DEPOSIT, s.WALLET_TRANSACTIONS, s.WALLET_CHARGES,
            s.RUNS_LIST, s.RUNS_GET,
            s.CATALOG_CHANGED,
            "$KV.>",  # async-run index and rate-limit state
            "ratelimit.>",
        ],
        "subscribe": ["run.progress.*", s.KEYS_REVOKED, s.CATALOG_CHANGED],
    },
    "runner": {
        "publish": [
            s.RUN_COMPLETED, s.RUN_FAILED, "run.progress.*",
            s.SECRETS_RESOLVE,  # only the runner may resolve a secret
            "$JS.ACK.RUNS.>",
        ],
        "subscribe": [s.RUNS_LIST, s.RUNS_GET],
    },
    "billing": {
        "publish": ["billing.>", "$JS.ACK.RUN_EVENTS.>"],  # only billing announces charges
        "subscribe": [s.WALLET_BALANCE, s.WALLET_DEPOSIT, s.WALLET_TRANSACTIONS, s.WALLET_CHARGES,
                      s.SPEND_RESERVE, s.SPEND_RELEASE, s.SPEND_TOTALS],
    },
    "keys": {
        "publish": [s.KEYS_REVOKED],
        "subscribe": [
            s.KEYS_ISSUE, s.KEYS_VERIFY, s.KEYS_REVOKE, s.SECRETS_STORE, s.SECRETS_DELETE, s.SECRETS_RESOLVE,
            s.KEYS_CREATE, s.KEYS_LIST, s.KEYS_UPDATE, s.KEYS_USED,  # caller keys
        ],
    },
}  # fmt: skip


# The example platform subscriber (examples/webhook_forwarder): its NATS user and its consumers' name.
WEBHOOK_FORWARDER = "webhook-forwarder"


def subscriber_permissions(durable: str) -> Permissions:
    """A platform subscriber (a webhook forwarder, an analytics feed) reading the event streams through durable
    consumers named `durable`: it may create, read, pull and acknowledge those consumers, and nothing else — not
    another consumer (billing's could otherwise be updated or deleted through the same API), not an event, not a
    request to a service. Consumer names are a subject token, so the grant names the consumer exactly."""
    streams = [s.RUN_EVENTS_STREAM.name, s.BILLING_EVENTS_STREAM.name]
    publish = ["$JS.API.INFO"]
    for stream in streams:
        publish += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.*.{stream}.{durable}",  # CREATE (no filter), INFO, DELETE of its own consumer
            f"$JS.API.CONSUMER.*.{stream}.{durable}.>",  # CREATE with a filter subject
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",  # what nats-py's add_consumer sends
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return {"publish": publish, "subscribe": ["_INBOX.>"]}


def permissions(service: str) -> Permissions:
    own = SERVICE_PERMISSIONS[service]
    return {
        "publish": _EVERYONE["publish"] + own["publish"],
        "subscribe": _EVERYONE["subscribe"] + own["subscribe"],
    }


def authorization_conf(passwords: dict[str, str]) -> str:
    """A nats-server `authorization` block: one user per service, the example subscriber's, and `admin` (all
    subjects) for operators."""
    users = []
    for user, password in passwords.items():
        entry: dict[str, object] = {"user": user, "password": password}
        perms = None
        if user in SERVICE_PERMISSIONS:
            perms = permissions(user)
        elif user == WEBHOOK_FORWARDER:
            perms = subscriber_permissions(WEBHOOK_FORWARDER)
        if perms is not None:
            entry["permissions"] = {"publish": {"allow": perms["publish"]}, "subscribe": {"allow": perms["subscribe"]}}
        users.append(entry)
    # nats-server's config format accepts JSON values.
    return "authorization { users: " + json.dumps(users) + " }\n"
