"""Requests the keys service answers about secrets (LLM keys, MCP headers): store, delete, resolve sealed."""

from __future__ import annotations

from pydantic import Field

from ..events import Contract


class StoreSecret(Contract):
    owner_id: str
    value: str
    secret_id: str | None = Field(
        None,
        description="Replace this secret's value instead of creating one (runners are told to drop the old one). "
        "The gateway never does: a new value gets a new id.",
    )


class StoredSecret(Contract):
    secret_id: str


class DeleteSecret(Contract):
    secret_id: str


class ResolveSecret(Contract):
    secret_id: str
    owner_id: str = Field(description="The secret must belong to this owner.")
    reply_key: str = Field(
        description="The asking process's X25519 public key (base64url, `agentry_common.sealed`): the value comes "
        "back sealed to it, so a copy of the reply taken off the bus is unreadable.",
    )


class ResolvedSecret(Contract):
    sealed: str = Field(description="The secret sealed to the request's `reply_key` (HPKE); never in clear.")
