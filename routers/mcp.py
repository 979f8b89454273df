"""MCP servers from mcp.json: status, tools, and direct tool calls."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import TypeAdapter

from app.deps import AccessDep, StateDep, pool_of
from app.security import access_of
from routers.paths import named_in_path
from routers.route import Route
from routers.schemas import ToolList, problem_responses
from services.errors import InvalidJSONError, InvalidRequestError
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


# The body's documentation, as FastAPI wrote it for the `dict` body the route took before it read the body itself
_ARGUMENTS = {"type": "object", "additionalProperties": True, "examples": [{"timezone": "UTC"}], "title": "Arguments"}
_NOT_A_DICT = {"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}


def tool_arguments(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """A tool call's body as FastAPI reads a JSON `dict` body: none is `{}`; JSON only under a JSON media type
    (`application/json`, `application/*+json`), anything else is not a dictionary (422); JSON that does not
    parse is `invalid_json` (400)."""
    if not raw:
        return {}
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise InvalidRequestError(f"body: {_NOT_A_DICT['msg']}", errors=[_NOT_A_DICT])
    try:
        arguments = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidJSONError(InvalidJSONError.title) from None
    except (ValueError, RecursionError):  # not UTF-8, or nested too deeply
        raise InvalidJSONError(InvalidJSONError.UNPARSABLE) from None
    if not isinstance(arguments, dict):
        raise InvalidRequestError(f"body: {_NOT_A_DICT['msg']}", errors=[_NOT_A_DICT])
    return arguments


@router.post(
    "/{name}/tools/{tool}",
    response_model=ToolResult,
    operation_id="callMcpTool",
    summary="Call a tool",
    responses=problem_responses(400, 403, 404, 413, 422, 502, 503, 504),
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _ARGUMENTS}}}},
)
async def call_tool(name: ServerName, tool: ToolName, request: Request) -> Response:
    """Call one tool directly; the body is its arguments, checked against its input schema."""
    # the pool, the key's access and the body straight from the request: FastAPI's dependencies and body
    # field cost ~0.1 ms a call, the REST tool call's hot path (docs/performance.md, issue 35)
    arguments = tool_arguments(await request.body(), request.headers.get("content-type"))
    access = access_of(request.scope)
    if access is not None:
        access.check_tools([(name, tool)])
    pool = pool_of(request)
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
