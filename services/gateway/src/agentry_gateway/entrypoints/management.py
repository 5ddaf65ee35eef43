"""Management API: workspaces, MCP servers, endpoints (JWT). Another user's resource answers 404."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import ErrorBody, ServiceUnavailable, UpstreamFailed

from ..key_schemas import RegenerateBody
from ..schemas import (
    ApiKeyOut,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    ServerCreate,
    ServerList,
    ServerOut,
    ServerRegistered,
    ServerTools,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceOut,
)
from ..service import endpoint_public, server_public, workspace_public
from .deps import CurrentUser, GatewayDep

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Conflict (slug taken, workspace not empty)"}
}


@router.post("/workspaces", status_code=201, tags=["workspaces"])
async def create_workspace(body: WorkspaceCreate, user: CurrentUser, gw: GatewayDep) -> WorkspaceOut:
    async with gw.unit_of_work() as repo:
        ws = await gw.catalog.create_workspace(repo, user.id, body.name)
    return WorkspaceOut(workspace=workspace_public(ws))


@router.get("/workspaces", tags=["workspaces"])
async def list_workspaces(user: CurrentUser, gw: GatewayDep) -> WorkspaceList:
    async with gw.unit_of_work() as repo:
        rows = await repo.workspaces(user.id)
    return WorkspaceList(workspaces=[workspace_public(ws) for ws in rows])


@router.get("/workspaces/{workspace_id}", tags=["workspaces"])
async def get_workspace(workspace_id: str, user: CurrentUser, gw: GatewayDep) -> WorkspaceOut:
    async with gw.unit_of_work() as repo:
        ws = await gw.catalog.workspace(repo, user.id, workspace_id)
    return WorkspaceOut(workspace=workspace_public(ws))


@router.delete("/workspaces/{workspace_id}", status_code=204, tags=["workspaces"], responses=CONFLICT)
async def delete_workspace(workspace_id: str, user: CurrentUser, gw: GatewayDep) -> Response:
    async with gw.unit_of_work() as repo:
        await gw.catalog.delete_workspace(repo, user.id, workspace_id)
    await gw.cache.announce(workspace_id=workspace_id)
    return Response(status_code=204)


@router.post("/workspaces/{workspace_id}/servers", status_code=201, tags=["mcp servers"])
async def register_server(workspace_id: str, body: ServerCreate, user: CurrentUser, gw: GatewayDep) -> ServerRegistered:
    """Register a server, then list its tools once to report whether it answers; an unreachable server is
    registered all the same (it may be started later)."""
    async with gw.unit_of_work() as repo:
        srv = await gw.catalog.register_server(repo, user.id, workspace_id, body)
    await gw.cache.announce(workspace_id=workspace_id)
    try:
        listed = await gw.catalog.tools(srv)
    except (UpstreamFailed, ServiceUnavailable) as err:
        return ServerRegistered(server=server_public(srv), reachable=False, tools=0, problem=err.message)
    return ServerRegistered(server=server_public(srv), reachable=True, tools=len(listed.tools))


@router.get("/workspaces/{workspace_id}/servers", tags=["mcp servers"])
async def list_servers(workspace_id: str, user: CurrentUser, gw: GatewayDep) -> ServerList:
    async with gw.unit_of_work() as repo:
        ws = await gw.catalog.workspace(repo, user.id, workspace_id)
        rows = await repo.servers(ws.id)
    return ServerList(servers=[server_public(s) for s in rows])


@router.get("/workspaces/{workspace_id}/servers/{server_id}", tags=["mcp servers"])
async def get_server(workspace_id: str, server_id: str, user: CurrentUser, gw: GatewayDep) -> ServerOut:
    async with gw.unit_of_work() as repo:
        srv = await gw.catalog.server(repo, user.id, workspace_id, server_id)
    return ServerOut(server=server_public(srv))


@router.get(
    "/workspaces/{workspace_id}/servers/{server_id}/tools",
    tags=["mcp servers"],
    responses={
        502: {"model": ErrorBody, "description": "`tool_server_unavailable`: the server did not answer"},
        503: {"model": ErrorBody, "description": "No runner answered (it lists the tools)"},
    },
)
async def list_server_tools(workspace_id: str, server_id: str, user: CurrentUser, gw: GatewayDep) -> ServerTools:
    """The tools the server offers right now (a live `tools/list`), with the names a run's model calls them by."""
    async with gw.unit_of_work() as repo:
        srv = await gw.catalog.server(repo, user.id, workspace_id, server_id)
    listed = await gw.catalog.tools(srv)
    return ServerTools(tools=listed.tools)


@router.delete("/workspaces/{workspace_id}/servers/{server_id}", status_code=204, tags=["mcp servers"])
async def delete_server(workspace_id: str, server_id: str, user: CurrentUser, gw: GatewayDep) -> Response:
    async with gw.unit_of_work() as repo:
        await gw.catalog.delete_server(repo, user.id, workspace_id, server_id)
    await gw.cache.announce(workspace_id=workspace_id)
    return Response(status_code=204)


@router.post("/agent-endpoints", status_code=201, tags=["endpoints"], responses=CONFLICT)
async def create_endpoint(body: EndpointCreate, user: CurrentUser, gw: GatewayDep) -> EndpointCreated:
    async with gw.unit_of_work() as repo:
        ep, api_key = await gw.catalog.create_endpoint(repo, user.id, body)
    return EndpointCreated(endpoint=endpoint_public(ep), api_key=api_key, run_url=f"/api/run/{ep.slug}")


@router.get("/agent-endpoints", tags=["endpoints"])
async def list_endpoints(
    user: CurrentUser,
    gw: GatewayDep,
    workspace_id: Annotated[str | None, Query(description="Only this workspace's endpoints.")] = None,
) -> EndpointList:
    async with gw.unit_of_work() as repo:
        rows = await repo.endpoints(user.id, workspace_id)
    return EndpointList(endpoints=[endpoint_public(ep) for ep in rows])


@router.get("/agent-endpoints/{endpoint_id}", tags=["endpoints"])
async def get_endpoint(endpoint_id: str, user: CurrentUser, gw: GatewayDep) -> EndpointOut:
    async with gw.unit_of_work() as repo:
        ep = await gw.catalog.endpoint(repo, user.id, endpoint_id)
    return EndpointOut(endpoint=endpoint_public(ep))


@router.patch("/agent-endpoints/{endpoint_id}", tags=["endpoints"], responses=CONFLICT)
async def update_endpoint(endpoint_id: str, body: EndpointUpdate, user: CurrentUser, gw: GatewayDep) -> EndpointOut:
    async with gw.unit_of_work() as repo:
        ep = await gw.catalog.update_endpoint(repo, user.id, endpoint_id, body)
    await gw.cache.announce(endpoint_id=endpoint_id)
    return EndpointOut(endpoint=endpoint_public(ep))


@router.delete("/agent-endpoints/{endpoint_id}", status_code=204, tags=["endpoints"])
async def delete_endpoint(endpoint_id: str, user: CurrentUser, gw: GatewayDep) -> Response:
    async with gw.unit_of_work() as repo:
        await gw.catalog.delete_endpoint(repo, user.id, endpoint_id)
    await gw.cache.announce(endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post("/agent-endpoints/{endpoint_id}/regenerate-key", tags=["endpoints"])
async def regenerate_key(
    endpoint_id: str, user: CurrentUser, gw: GatewayDep, body: RegenerateBody | None = None
) -> ApiKeyOut:
    """Replace the endpoint's `default` key (recreating it if it was revoked). With `grace_seconds` the old key
    keeps working that long, then fails on every gateway replica."""
    grace = body.grace_seconds if body is not None else 0
    async with gw.unit_of_work() as repo:
        api_key = await gw.catalog.regenerate_key(repo, user.id, endpoint_id, grace)
    return ApiKeyOut(api_key=api_key)
