"""Least privilege on the bus: which subjects each service may publish and subscribe to.

One table, used by the local launcher (so development runs with production's permissions) and checked
against the Kubernetes NATS values by the deploy tests. JetStream's own API (`$JS.API.>`) is open to every
service (each declares the streams, its consumers and its buckets) but for its destructive and administrative
half, denied to all: no service deletes or purges a stream, deletes a consumer, removes a stored message
(except the gateway's rate limiter, which hands an unused admission back on its own RATELIMIT_* streams),
snapshots, restores or steps down anything. Operators do those as `admin`. Application subjects are not open.

Replies: every account has its own inbox prefix, `_INBOX_<user>` (`agentry_common.subjects.inbox_prefix`, which
the services connect with), and may subscribe to its own inboxes only — a reply (the keys service's
`secrets.resolve` answer carries a decrypted secret) is readable by the account that asked and by nobody else.
No account may publish to an inbox; a service that serves requests answers through nats-server's
`allow_responses`, which lets it publish once to the reply subject of a request it received, and nowhere else.
"""

from __future__ import annotations

import json
from typing import TypedDict

from agentry_common import subjects as s
from agentry_common.jetstream import next_subject
from agentry_common.subjects import inbox_prefix


class Grants(TypedDict):
    publish: list[str]
    subscribe: list[str]


class Permissions(Grants):
    allow_responses: bool  # may answer the requests it receives (once each), whatever their reply subject
    deny_publish: list[str]  # refused even where `publish` allows (nats-server: deny wins)


def _own_inboxes(user: str) -> str:
    return f"{inbox_prefix(user)}.>"


_EVERYONE_PUBLISHES = ["$JS.API.>"]
_NOBODY_PUBLISHES = [
    "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.REMOVE.>", "$JS.API.STREAM.LEADER.STEPDOWN.>", "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.LEADER.STEPDOWN.>", "$JS.API.META.LEADER.STEPDOWN", "$JS.API.SERVER.REMOVE",
    "$JS.API.ACCOUNT.PURGE.>",
]  # fmt: skip
_MSG_DELETE = "$JS.API.STREAM.MSG.DELETE"


def _denied(service: str) -> list[str]:
    if service != "gateway":
        return [*_NOBODY_PUBLISHES, f"{_MSG_DELETE}.>"]
    # The gateway removes admissions from its limiter's streams (RATELIMIT_*, named per limit), nothing else.
    kept = [spec.name for spec in s.STREAMS] + [f"KV_{s.ASYNC_RUNS_BUCKET}"]
    return [*_NOBODY_PUBLISHES, *(f"{_MSG_DELETE}.{name}" for name in kept)]


SERVICE_PERMISSIONS: dict[str, Grants] = {
    "gateway": {
        "publish": [
            s.RUN_REQUESTED,  # only the gateway starts runs
            s.KEYS_ISSUE, s.KEYS_VERIFY, s.KEYS_REVOKE, s.SECRETS_STORE, s.SECRETS_DELETE,
            s.KEYS_CREATE, s.KEYS_LIST, s.KEYS_UPDATE, s.KEYS_USED,  # caller keys
            s.SPEND_RESERVE, s.SPEND_RELEASE, s.SPEND_TOTALS,  # spend caps
            s.WALLET_BALANCE, s.WALLET_DEPOSIT, s.WALLET_TRANSACTIONS, s.WALLET_CHARGES,
            s.WALLET_DEPOSITS, s.WALLET_AUTO_RECHARGE_GET, s.WALLET_AUTO_RECHARGE_SET, s.PAYMENTS_STRIPE_WEBHOOK,
            s.WALLET_USAGE, s.WALLET_ALERTS_GET, s.WALLET_ALERTS_SET,
            s.RUNS_LIST, s.RUNS_GET, s.TOOLS_LIST,
            *s.WEBHOOKS_REQUESTS,
            s.CATALOG_CHANGED,
            "$KV.>",  # async-run index and rate-limit state
            "ratelimit.>",
        ],
        "subscribe": ["run.progress.*", s.KEYS_REVOKED, s.CATALOG_CHANGED],
    },
    "runner": {
        "publish": [
            s.RUN_COMPLETED, s.RUN_FAILED, "run.progress.*",
            s.SECRETS_RESOLVE,  # the runner and webhooks (signing secrets) may resolve a secret
            "$JS.ACK.RUNS.>",
        ],
        "subscribe": [s.RUNS_LIST, s.RUNS_GET, s.TOOLS_LIST, s.SECRETS_CHANGED, s.CATALOG_CHANGED],
    },
    "billing": {
        "publish": ["billing.>", "$JS.ACK.RUN_EVENTS.>"],  # only billing announces charges
        "subscribe": [
            s.WALLET_BALANCE, s.WALLET_DEPOSIT, s.WALLET_TRANSACTIONS, s.WALLET_CHARGES,
            s.WALLET_DEPOSITS, s.WALLET_AUTO_RECHARGE_GET, s.WALLET_AUTO_RECHARGE_SET, s.PAYMENTS_STRIPE_WEBHOOK,
            s.SPEND_RESERVE, s.SPEND_RELEASE, s.SPEND_TOTALS,
            s.WALLET_USAGE, s.WALLET_ALERTS_GET, s.WALLET_ALERTS_SET,
        ],
    },
    "webhooks": {
        "publish": [
            s.SECRETS_STORE, s.SECRETS_DELETE, s.SECRETS_RESOLVE,  # webhook signing secrets, encrypted by keys
            f"$JS.ACK.{s.RUN_EVENTS_STREAM.name}.>", f"$JS.ACK.{s.BILLING_EVENTS_STREAM.name}.>",
            f"$JS.ACK.{s.KEY_EVENTS_STREAM.name}.>",
        ],
        "subscribe": [*s.WEBHOOKS_REQUESTS, s.SECRETS_CHANGED],
    },
    "keys": {
        "publish": [s.KEYS_REVOKED, s.SECRETS_CHANGED, s.KEY_EXPIRING],
        "subscribe": [
            s.KEYS_ISSUE, s.KEYS_VERIFY, s.KEYS_REVOKE, s.SECRETS_STORE, s.SECRETS_DELETE, s.SECRETS_RESOLVE,
            s.KEYS_CREATE, s.KEYS_LIST, s.KEYS_UPDATE, s.KEYS_USED,  # caller keys
        ],
    },
}  # fmt: skip


# The services that serve requests (a queue group on a request subject), and so must answer them.
RESPONDERS = frozenset({"runner", "billing", "keys", "webhooks"})

# The example platform subscriber (examples/webhook_forwarder): its NATS user and its consumers' name.
WEBHOOK_FORWARDER = "webhook-forwarder"


def subscriber_permissions(durable: str, user: str = WEBHOOK_FORWARDER) -> Permissions:
    """A platform subscriber (a webhook forwarder, an analytics feed) reading the event streams through durable
    consumers named `durable`: it may create, read, pull and acknowledge those consumers, and nothing else — not
    another consumer (billing's could otherwise be updated or deleted through the same API), not an event, not a
    request to a service, not another account's inbox. Consumer names are a subject token, so the grant names the
    consumer exactly; `user` is its NATS user, whose inbox prefix it must connect with."""
    streams = [s.RUN_EVENTS_STREAM.name, s.BILLING_EVENTS_STREAM.name]
    publish = ["$JS.API.INFO"]
    for stream in streams:
        publish += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.*.{stream}.{durable}",  # CREATE (no filter), INFO, DELETE of its own consumer
            f"$JS.API.CONSUMER.*.{stream}.{durable}.>",  # CREATE with a filter subject
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",  # what nats-py's add_consumer sends
            next_subject(stream, durable),
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return {"publish": publish, "subscribe": [_own_inboxes(user)], "allow_responses": False, "deny_publish": []}


def permissions(service: str) -> Permissions:
    own = SERVICE_PERMISSIONS[service]
    return {
        "publish": _EVERYONE_PUBLISHES + own["publish"],
        "subscribe": [_own_inboxes(service), *own["subscribe"]],
        "allow_responses": service in RESPONDERS,
        "deny_publish": _denied(service),
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
            entry["permissions"] = nats_permissions(perms)
        users.append(entry)
    # nats-server's config format accepts JSON values.
    return "authorization { users: " + json.dumps(users) + " }\n"


def nats_permissions(perms: Permissions) -> dict[str, object]:
    """A user's `permissions` block in nats-server's configuration."""
    publish: dict[str, list[str]] = {"allow": perms["publish"]}
    if perms["deny_publish"]:
        publish["deny"] = perms["deny_publish"]
    block: dict[str, object] = {"publish": publish, "subscribe": {"allow": perms["subscribe"]}}
    if perms["allow_responses"]:
        block["allow_responses"] = True
    return block
