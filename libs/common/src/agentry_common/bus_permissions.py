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
        "subscribe": [s.WALLET_BALANCE, s.WALLET_DEPOSIT, s.WALLET_TRANSACTIONS, s.WALLET_CHARGES],
    },
    "keys": {
        "publish": [s.KEYS_REVOKED],
        "subscribe": [
            s.KEYS_ISSUE, s.KEYS_VERIFY, s.KEYS_REVOKE, s.SECRETS_STORE, s.SECRETS_DELETE, s.SECRETS_RESOLVE,
        ],
    },
}  # fmt: skip


def permissions(service: str) -> Permissions:
    own = SERVICE_PERMISSIONS[service]
    return {
        "publish": _EVERYONE["publish"] + own["publish"],
        "subscribe": _EVERYONE["subscribe"] + own["subscribe"],
    }


def authorization_conf(passwords: dict[str, str]) -> str:
    """A nats-server `authorization` block: one user per service, plus `admin` (all subjects) for operators."""
    users = []
    for user, password in passwords.items():
        entry: dict[str, object] = {"user": user, "password": password}
        if user in SERVICE_PERMISSIONS:
            perms = permissions(user)
            entry["permissions"] = {"publish": {"allow": perms["publish"]}, "subscribe": {"allow": perms["subscribe"]}}
        users.append(entry)
    # nats-server's config format accepts JSON values.
    return "authorization { users: " + json.dumps(users) + " }\n"
