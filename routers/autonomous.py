"""POST /v1/autonomous and the three mirrors of the original bridge's tools."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import agent_of
from app.security import access_of
from routers.route import Route
from routers.schemas import RUN_EVENT_SCHEMA, problem_responses
from routers.streaming import CLIENT_CLOSED_REQUEST, RunStream, execute_for_client, wants_stream
from services.agent import Run, RunResult, RunSpec, result_json, run_spec
from services.agent.options import (
    AllowedTools,
    MaxRounds,
    MaxTokens,
    MCPServers,
    Model,
    SystemPrompt,
    Task,
    Temperature,
    TimeoutS,
    ToolChoiceOption,
)

router = APIRouter(prefix="/v1/autonomous", tags=["autonomous"], route_class=Route)

STREAM = Field(False, description="Answer with Server-Sent Events (also chosen by Accept: text/event-stream)")
STORE = Field(True, description="Record the run in the run store (GET /v1/runs/{run_id}); false: keep no record")


class _RunOptions(BaseModel):
    """What every autonomous request shares (the types, bounds and descriptions are services.agent.options')."""

    # strict: the types are the documented ones (no "stream": 0 or "max_rounds": "5"), as schemathesis checks
    model_config = ConfigDict(extra="forbid", strict=True)

    task: Task
    model: Model = None
    max_rounds: MaxRounds = None
    max_tokens: MaxTokens = None
    timeout_s: TimeoutS = None
    tool_choice: ToolChoiceOption = None
    stream: bool = STREAM
    store: bool = STORE


class AutonomousRequest(_RunOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"task": "What time is it in Tokyo?", "mcp_servers": ["time"], "model": "qwen/qwen3-4b"}]
        },
    )
    mcp_servers: MCPServers = None
    temperature: Temperature = None
    system_prompt: SystemPrompt = None
    allowed_tools: AllowedTools = None


class WithMCPRequest(_RunOptions):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"mcp_name": "time", "task": "What time is it in Tokyo?"}]}
    )
    mcp_name: str = Field(min_length=1, examples=["time"])


class WithMultipleMCPsRequest(_RunOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"mcp_names": ["time", "memory"], "task": "Store the current UTC time as an entity 'now'"}]
        },
    )
    mcp_names: list[str] = Field(min_length=1, examples=[["time", "memory"]])


class DiscoverRequest(_RunOptions):
    model_config = ConfigDict(json_schema_extra={"examples": [{"task": "What time is it in Tokyo?", "max_rounds": 5}]})


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run result, or a Server-Sent Events stream when streaming was asked for",
        "content": {"text/event-stream": {"schema": RUN_EVENT_SCHEMA}},
    },
    **problem_responses(400, 401, 403, 413, 422, 429, 502, 503, 504),
}


async def _respond(request: Request, spec: RunSpec, stream: bool) -> Response:
    spec.access = access_of(request.scope)
    return await respond(request, await agent_of(request).open(spec), stream)


async def respond(request: Request, run: Run, stream: bool) -> Response:
    """An opened run carried out for its client: as SSE when asked for, else as its JSON result."""
    if wants_stream(request, stream):
        return RunStream(run)
    result = await execute_for_client(request, run)
    if result is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Response(result_json(result), media_type="application/json")


@router.post("", response_model=RunResult, responses=RESPONSES, operation_id="runAutonomous", summary="Run a task")
async def autonomous(body: AutonomousRequest, request: Request) -> Response:
    """Run a task with tools from the chosen MCP servers (all enabled ones if omitted)."""
    return await _respond(request, run_spec(body, store=body.store), body.stream)


@router.post(
    "/with-mcp",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runWithMcp",
    summary="Run a task with one server",
)
async def with_mcp(body: WithMCPRequest, request: Request) -> Response:
    """Run a task with the tools of one MCP server (mirror of `autonomous_with_mcp`)."""
    spec = run_spec(body, mcp_servers=[body.mcp_name], store=body.store)
    return await _respond(request, spec, body.stream)


@router.post(
    "/with-multiple-mcps",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runWithMultipleMcps",
    summary="Run a task with several servers",
)
async def with_multiple_mcps(body: WithMultipleMCPsRequest, request: Request) -> Response:
    """Run a task with the tools of several MCP servers (mirror of `autonomous_with_multiple_mcps`)."""
    spec = run_spec(body, mcp_servers=body.mcp_names, store=body.store)
    return await _respond(request, spec, body.stream)


@router.post(
    "/discover",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runDiscover",
    summary="Run a task with every server",
)
async def discover(body: DiscoverRequest, request: Request) -> Response:
    """Run a task with every enabled MCP server's tools (mirror of `autonomous_discover_and_execute`)."""
    return await _respond(request, run_spec(body, store=body.store), body.stream)
