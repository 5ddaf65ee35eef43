"""The endpoint catalog: workspaces, MCP servers and endpoints, with their keys and secrets kept elsewhere.

Secrets (BYO LLM keys, MCP headers) go straight to the keys service; this service stores only their ids.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from nats.aio.client import Client
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from agentry_common import rpc, subjects
from agentry_common.app import validation_message
from agentry_common.errors import Conflict, NotFound, ValidationFailed
from agentry_common.events import EndpointSnapshot, McpServerRef, new_id
from agentry_common.requests import (
    DeleteSecret,
    Done,
    IssuedKey,
    IssueKey,
    ListTools,
    RevokeKey,
    StoredSecret,
    StoreSecret,
    ToolList,
)

from .models import Endpoint, McpServer, Workspace
from .repository import CatalogRepository
from .schemas import (
    EndpointCreate,
    EndpointFields,
    EndpointPublic,
    EndpointUpdate,
    ServerCreate,
    ServerPublic,
    WorkspacePublic,
)
from .settings import Settings


def slugify(name: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:max_len].strip("-")
    return slug or "agent"


def check_json_schema(field: str, schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ValidationFailed(f"{field}: not a valid JSON Schema ({err.message})") from None


def workspace_public(ws: Workspace) -> WorkspacePublic:
    return WorkspacePublic(id=ws.id, name=ws.name, owner_id=ws.owner_id, created_at=ws.created_at)


def server_public(srv: McpServer) -> ServerPublic:
    return ServerPublic(
        id=srv.id,
        workspace_id=srv.workspace_id,
        name=srv.name,
        slug=srv.slug,
        url=srv.url,
        header_names=list(srv.header_names or []),
        created_at=srv.created_at,
    )


def endpoint_public(ep: Endpoint) -> EndpointPublic:
    fields = {name: getattr(ep, name) for name in EndpointPublic.model_fields if hasattr(Endpoint, name)}
    return EndpointPublic(**fields, has_llm_api_key=ep.llm_secret_id is not None)


def endpoint_snapshot(ep: Endpoint, servers: list[McpServer]) -> EndpointSnapshot:
    fields = {name: getattr(ep, name) for name in EndpointSnapshot.model_fields if hasattr(Endpoint, name)}
    refs = [McpServerRef(slug=s.slug, url=s.url, headers_secret_id=s.headers_secret_id) for s in servers]
    return EndpointSnapshot(**fields, servers=refs)


# Fields stored on the row exactly as validated; the rest (key, slug) need work of their own.
_PLAIN_FIELDS = set(EndpointFields.model_fields) - {"llm_api_key", "slug", "workspace_id"}


class Catalog:
    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.settings = settings

    async def _call(self, subject: str, request: Any, reply: type[Any]) -> Any:
        return await rpc.call(
            self.nc,
            subject,
            request,
            reply,
            timeout=self.settings.rpc_timeout_s,
            unavailable="the keys service is unavailable",
        )

    async def check_url(self, field: str, url: str | None) -> None:
        if url is None:
            return
        from agentry_common.netguard import check_url

        try:
            await check_url(url, allow_private=self.settings.allow_private_urls)
        except ValidationFailed as err:
            raise ValidationFailed(f"{field}: {err.message}", code=err.code) from None

    # --- workspaces ---

    async def create_workspace(self, repo: CatalogRepository, owner_id: str, name: str) -> Workspace:
        ws = Workspace(id=new_id("ws"), owner_id=owner_id, name=name)
        await repo.add(ws)
        return ws

    async def workspace(self, repo: CatalogRepository, owner_id: str, workspace_id: str) -> Workspace:
        ws = await repo.workspace(owner_id, workspace_id)
        if ws is None:
            raise NotFound("workspace not found", code="workspace_not_found")
        return ws

    async def delete_workspace(self, repo: CatalogRepository, owner_id: str, workspace_id: str) -> None:
        ws = await self.workspace(repo, owner_id, workspace_id)
        if await repo.workspace_has_endpoints(ws.id):
            raise Conflict("workspace still has endpoints; delete them first", code="workspace_not_empty")
        secrets = [s.headers_secret_id for s in await repo.servers(ws.id) if s.headers_secret_id]
        await repo.delete_workspace(ws.id)
        for secret_id in secrets:
            self._delete_secret_on_commit(repo, secret_id)

    # --- MCP servers ---

    async def register_server(
        self, repo: CatalogRepository, owner_id: str, workspace_id: str, body: ServerCreate
    ) -> McpServer:
        ws = await self.workspace(repo, owner_id, workspace_id)
        await self.check_url("url", body.url)
        base = slugify(body.name, 40)
        slug, n = base, 1
        while await repo.server_slug_taken(ws.id, slug):
            n += 1
            slug = f"{base}-{n}"
        secret_id = await self._store_secret(repo, owner_id, json.dumps(body.headers)) if body.headers else None
        srv = McpServer(
            id=new_id("srv"),
            workspace_id=ws.id,
            owner_id=owner_id,
            name=body.name,
            slug=slug,
            url=body.url,
            headers_secret_id=secret_id,
            header_names=sorted(body.headers or {}),
        )
        await repo.add(srv)
        return srv

    async def server(self, repo: CatalogRepository, owner_id: str, workspace_id: str, server_id: str) -> McpServer:
        ws = await self.workspace(repo, owner_id, workspace_id)
        srv = await repo.server(ws.id, server_id)
        if srv is None:
            raise NotFound("server not found", code="server_not_found")
        return srv

    async def tools(self, srv: McpServer) -> ToolList:
        """The server's tools now, listed by a runner (only it may resolve the headers): 502
        `tool_server_unavailable` when the server does not answer, 503 when no runner does."""
        ref = McpServerRef(slug=srv.slug, url=srv.url, headers_secret_id=srv.headers_secret_id)
        timeout = self.settings.tool_list_timeout_s
        request = ListTools(server=ref, owner_id=srv.owner_id, timeout_s=timeout)
        return await rpc.call(
            self.nc, subjects.TOOLS_LIST, request, ToolList,
            timeout=timeout + self.settings.rpc_timeout_s, unavailable="the runner is unavailable",
        )  # fmt: skip

    async def delete_server(self, repo: CatalogRepository, owner_id: str, workspace_id: str, server_id: str) -> None:
        srv = await self.server(repo, owner_id, workspace_id, server_id)
        await repo.delete_server(srv.id)
        if srv.headers_secret_id:
            self._delete_secret_on_commit(repo, srv.headers_secret_id)

    # --- endpoints ---

    async def endpoint(self, repo: CatalogRepository, owner_id: str, endpoint_id: str) -> Endpoint:
        ep = await repo.endpoint(owner_id, endpoint_id)
        if ep is None:
            raise NotFound("endpoint not found", code="endpoint_not_found")
        return ep

    async def _free_slug(self, repo: CatalogRepository, name: str) -> str:
        base = slugify(name, 52)
        taken = await repo.slugs_like(base)
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    async def _validate(self, fields: EndpointFields) -> None:
        check_json_schema("input_schema", fields.input_schema)
        check_json_schema("output_schema", fields.output_schema)
        await self.check_url("llm_base_url", fields.llm_base_url)

    async def create_endpoint(
        self, repo: CatalogRepository, owner_id: str, body: EndpointCreate
    ) -> tuple[Endpoint, str]:
        await self.workspace(repo, owner_id, body.workspace_id)
        await self._validate(body)
        endpoint_id = new_id("aep")
        values = {name: getattr(body, name) for name in _PLAIN_FIELDS}
        ep = Endpoint(id=endpoint_id, owner_id=owner_id, workspace_id=body.workspace_id, status="active", **values)
        explicit = body.slug is not None
        for _attempt in range(5):
            ep.slug = body.slug if body.slug is not None else await self._free_slug(repo, body.name)
            try:
                async with repo.session.begin_nested():
                    await repo.add(ep)
                break
            except IntegrityError:
                if explicit:
                    raise Conflict(f"slug {body.slug!r} is taken", code="slug_taken") from None
        else:
            raise Conflict("could not find a free slug; pass one explicitly", code="slug_taken")
        if body.llm_api_key is not None:
            ep.llm_secret_id = await self._store_secret(repo, owner_id, body.llm_api_key)
        issued = await self._call(subjects.KEYS_ISSUE, IssueKey(endpoint_id=ep.id, owner_id=owner_id), IssuedKey)
        repo.on_rollback(
            "revoke the key of an endpoint that was not created",
            lambda: self._call(subjects.KEYS_REVOKE, RevokeKey(endpoint_id=endpoint_id), Done),
        )
        ep.api_key_prefix = issued.prefix
        await repo.session.flush()
        return ep, issued.api_key

    async def _store_secret(self, repo: CatalogRepository, owner_id: str, value: str) -> str:
        """Store a new secret under a new id (removed again if the unit of work does not commit).

        A secret's value never changes under its id: a new value is a new secret, and the old one is deleted
        once the row no longer names it. So a run's endpoint snapshot names exactly the value it was taken
        with, and runners may keep resolved values in memory by id (see the runner's `secret_cache`)."""
        stored = await self._call(subjects.SECRETS_STORE, StoreSecret(owner_id=owner_id, value=value), StoredSecret)
        secret_id = str(stored.secret_id)
        repo.on_rollback(
            "delete a secret stored for a change that was not made",
            lambda: self._call(subjects.SECRETS_DELETE, DeleteSecret(secret_id=secret_id), Done),
        )
        return secret_id

    def _delete_secret_on_commit(self, repo: CatalogRepository, secret_id: str) -> None:
        repo.on_commit(
            "delete a secret nothing uses any more",
            lambda: self._call(subjects.SECRETS_DELETE, DeleteSecret(secret_id=secret_id), Done),
        )

    async def update_endpoint(
        self, repo: CatalogRepository, owner_id: str, endpoint_id: str, patch: EndpointUpdate
    ) -> Endpoint:
        ep = await self.endpoint(repo, owner_id, endpoint_id)
        sent = patch.model_dump(exclude_unset=True)
        # The merged result must pass the same validation as a create.
        merged = {name: getattr(ep, name) for name in _PLAIN_FIELDS}
        merged.update({k: v for k, v in sent.items() if k in _PLAIN_FIELDS})
        merged.update(workspace_id=ep.workspace_id)
        try:
            fields = EndpointFields.model_validate(merged, strict=False)
        except ValidationError as err:
            raise ValidationFailed(validation_message(list(err.errors()))) from None
        await self._validate(fields)
        values: dict[str, Any] = {k: v for k, v in sent.items() if k in _PLAIN_FIELDS or k == "status"}
        if "slug" in sent and sent["slug"] != ep.slug:
            values["slug"] = sent["slug"]
        # The key changes only with the row: a new one is stored first under a new id (the row needs it) and
        # removed again if the row is not written; the replaced or removed one is deleted only once the row
        # no longer names it.
        if "llm_api_key" in sent:
            new_key: str | None = sent["llm_api_key"]
            values["llm_secret_id"] = None if new_key is None else await self._store_secret(repo, owner_id, new_key)
            if ep.llm_secret_id:
                self._delete_secret_on_commit(repo, ep.llm_secret_id)
        if values:
            try:
                async with repo.session.begin_nested():
                    await repo.update_endpoint(ep.id, values)
            except IntegrityError:
                raise Conflict(f"slug {sent.get('slug')!r} is taken", code="slug_taken") from None
        if values:
            await repo.session.refresh(ep)
        return ep

    async def delete_endpoint(self, repo: CatalogRepository, owner_id: str, endpoint_id: str) -> Endpoint:
        ep = await self.endpoint(repo, owner_id, endpoint_id)
        await repo.delete_endpoint(ep.id)
        # Revoked before the commit: with the keys service away the endpoint stays, rather than its key.
        await self._call(subjects.KEYS_REVOKE, RevokeKey(endpoint_id=ep.id), Done)
        if ep.llm_secret_id:
            self._delete_secret_on_commit(repo, ep.llm_secret_id)
        return ep

    async def regenerate_key(
        self, repo: CatalogRepository, owner_id: str, endpoint_id: str, grace_seconds: int = 0
    ) -> str:
        """Replace the `default` key (recreating it if it was revoked); the old one works `grace_seconds` more."""
        ep = await self.endpoint(repo, owner_id, endpoint_id)
        issue = IssueKey(endpoint_id=ep.id, owner_id=owner_id, grace_seconds=grace_seconds)
        issued = await self._call(subjects.KEYS_ISSUE, issue, IssuedKey)
        await repo.update_endpoint(ep.id, {"api_key_prefix": issued.prefix})
        return str(issued.api_key)
