"""MCP servers from mcp.json: status, tools, and direct tool calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import TypeAdapter

from app.deps import AccessDep, PoolDep, StateDep
from routers.paths import named_in_path
from routers.route import Route
from routers.schemas import ToolList, problem_responses
from services.errors import InvalidRequestError
from services.mcp import ToolResult, validate_arguments
from services.status import ServerList

router = APIRouter(prefix="/v1/mcp/servers", tags=["mcp"], responses=problem_responses(401), route_class=Route)
ServerName = Annotated[str, Path(description="A server name from mcp.json", examples=["time"])]
ToolName = Annotated[str, Path(description="A tool of that server", examples=["get_current_time"])]
# serialises a result as it is: the tool's own output is not validated a second time
_TOOL_RESULT = TypeAdapter(ToolResult)


@router.get("", response_model=ServerList, operation_id="listMcpServers", summary="List MCP servers")
async def list_servers(state: StateDep, access: AccessDep) -> ServerList:
    """Configured MCP servers (those the API key may use) with their status (env and header names, never values)."""
    return await state.status.servers(access)


@router.get(
    "/{name}/tools",
    response_model=ToolList,
    operation_id="listMcpTools",
    summary="List a server's tools",
    responses=problem_responses(403, 404, 422, 502, 503, 504),
)
async def list_tools(name: ServerName, state: StateDep, access: AccessDep) -> ToolList:
    """The server's tools (those the API key may use) with their input schemas (starts the server if needed)."""
    with named_in_path():
        tools = await state.status.tools(name, access)
    return ToolList(server=name, data=tools)


@router.post(
    "/{name}/tools/{tool}",
    response_model=ToolResult,
    operation_id="callMcpTool",
    summary="Call a tool",
    responses=problem_responses(400, 403, 404, 413, 422, 502, 503, 504),
)
async def call_tool(
    name: ServerName,
    tool: ToolName,
    pool: PoolDep,
    access: AccessDep,
    arguments: Annotated[dict[str, Any], Body(default_factory=dict, examples=[{"timezone": "UTC"}])],
) -> Response:
    """Call one tool directly; the body is its arguments, checked against its input schema."""
    if access is not None:
        access.check_tools([(name, tool)])
    with named_in_path():
        spec = await pool.find_tool(name, tool)
    if spec is not None:
        violations = validate_arguments(spec.input_schema, arguments)
        if violations:
            raise InvalidRequestError(
                "Arguments do not match the tool's input schema: " + "; ".join(violations), violations=violations
            )
    result = await pool.call_tool(name, tool, arguments)  # unknown tool -> 404 listing the tools
    return Response(_TOOL_RESULT.dump_json(result), media_type="application/json")
