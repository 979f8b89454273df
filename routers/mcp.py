"""MCP servers from mcp.json: status, tools, and direct tool calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import JSONResponse

from app.deps import PoolDep, StateDep
from routers.paths import named_in_path
from routers.schemas import ServerList, ServerModel, ToolCallResult, ToolList, ToolModel, problem_responses
from services.errors import InvalidRequestError
from services.tool_args import validate_arguments

router = APIRouter(prefix="/v1/mcp/servers", tags=["mcp"], responses=problem_responses(401))
ServerName = Annotated[str, Path(description="A server name from mcp.json", examples=["time"])]
ToolName = Annotated[str, Path(description="A tool of that server", examples=["get_current_time"])]


@router.get("", response_model=ServerList, operation_id="listMcpServers", summary="List MCP servers")
async def list_servers(state: StateDep) -> ServerList:
    """Configured MCP servers with their status (env and header names only, never values)."""
    return ServerList(
        data=[ServerModel(**vars(s)) for s in state.pool.status()],
        config_path=str(state.mcp_config_path) if state.mcp_config_path else None,
    )


@router.get(
    "/{name}/tools",
    response_model=ToolList,
    operation_id="listMcpTools",
    summary="List a server's tools",
    responses=problem_responses(404, 422, 502, 503, 504),
)
async def list_tools(name: ServerName, pool: PoolDep) -> ToolList:
    """The server's tools with their input schemas (starts the server if needed)."""
    with named_in_path():
        tools = await pool.list_tools(name)
    return ToolList(
        server=name,
        data=[
            ToolModel(name=t.name, model_name=t.model_name, description=t.description, input_schema=t.input_schema)
            for t in tools
        ],
    )


@router.post(
    "/{name}/tools/{tool}",
    response_model=ToolCallResult,
    operation_id="callMcpTool",
    summary="Call a tool",
    responses=problem_responses(400, 404, 413, 422, 502, 503, 504),
)
async def call_tool(
    name: ServerName,
    tool: ToolName,
    pool: PoolDep,
    arguments: Annotated[dict[str, Any], Body(default_factory=dict, examples=[{"timezone": "UTC"}])],
) -> JSONResponse:
    """Call one tool directly; the body is its arguments, checked against its input schema."""
    with named_in_path():
        spec = next((t for t in await pool.list_tools(name) if t.name == tool), None)
    if spec is not None:
        violations = validate_arguments(spec.input_schema, arguments)
        if violations:
            raise InvalidRequestError(
                "Arguments do not match the tool's input schema: " + "; ".join(violations), violations=violations
            )
    result = await pool.call_tool(name, tool, arguments)  # unknown tool -> 404 listing the tools
    # the shape of ToolCallResult, without validating the tool's own output a second time
    body = {"content": result.content, "structured_content": result.structured_content, "is_error": result.is_error}
    return JSONResponse(body)
