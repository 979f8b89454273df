"""POST /v1/autonomous and the three mirrors of the original bridge's tools."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AgentDep
from app.security import access_of
from routers.schemas import RUN_EVENT_SCHEMA, problem_responses
from routers.streaming import CLIENT_CLOSED_REQUEST, RunStream, execute_for_client, wants_stream
from services.agent import MAX_ROUNDS_CAP, AgentService, Run, RunResult, RunSpec, ToolChoice, result_json

router = APIRouter(prefix="/v1/autonomous", tags=["autonomous"])

TASK = Field(
    min_length=1, max_length=20_000, description="What the model should do", examples=["What time is it in Tokyo?"]
)
MODEL = Field(
    None, description='Model id or alias; null or "default" picks the default model', examples=["qwen/qwen3-4b"]
)
ROUNDS = Field(
    None,
    ge=1,
    le=MAX_ROUNDS_CAP,
    description="Tool rounds before a final answer is asked for (BRIDGE_MAX_ROUNDS_DEFAULT)",
)
TOKENS = Field(None, ge=1, le=1_000_000, description="max_tokens of each LM Studio call (BRIDGE_MAX_TOKENS_DEFAULT)")
TIMEOUT = Field(None, gt=0, le=86_400, description="Run deadline in seconds (default BRIDGE_RUN_TIMEOUT_S)")
TOOL_CHOICE = Field(
    None,
    description='OpenAI tool_choice for the first round ("auto", "required", "none" or a named function); '
    'later rounds use "auto"; "none" offers no tools',
)
STREAM = Field(False, description="Answer with Server-Sent Events (also chosen by Accept: text/event-stream)")
STORE = Field(True, description="Record the run in the run store (GET /v1/runs/{run_id}); false: keep no record")


class _Body(BaseModel):
    # strict: the types are the documented ones (no "stream": 0 or "max_rounds": "5"), as schemathesis checks
    model_config = ConfigDict(extra="forbid", strict=True)


class _RunOptions(_Body):
    """What every autonomous request shares."""

    task: str = TASK
    model: str | None = MODEL
    max_rounds: int | None = ROUNDS
    max_tokens: int | None = TOKENS
    timeout_s: float | None = TIMEOUT
    tool_choice: ToolChoice | None = TOOL_CHOICE
    stream: bool = STREAM
    store: bool = STORE


class AutonomousRequest(_RunOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"task": "What time is it in Tokyo?", "mcp_servers": ["time"], "model": "qwen/qwen3-4b"}]
        },
    )
    mcp_servers: list[str] | None = Field(
        None, description="Servers to use; omitted = every enabled server", examples=[["time"]]
    )
    temperature: float | None = Field(None, ge=0, le=2)
    system_prompt: str | None = Field(None, max_length=20_000)
    allowed_tools: list[str] | None = Field(None, description="Subset of <server>__<tool> names the model may call")


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


async def _respond(request: Request, agent: AgentService, spec: RunSpec, stream: bool) -> Response:
    spec.access = access_of(request.scope)
    return await respond(request, await agent.open(spec), stream)


async def respond(request: Request, run: Run, stream: bool) -> Response:
    """An opened run carried out for its client: as SSE when asked for, else as its JSON result."""
    if wants_stream(request, stream):
        return RunStream(run)
    result = await execute_for_client(request, run)
    if result is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Response(result_json(result), media_type="application/json")


@router.post("", response_model=RunResult, responses=RESPONSES, operation_id="runAutonomous", summary="Run a task")
async def autonomous(body: AutonomousRequest, request: Request, agent: AgentDep) -> Response:
    """Run a task with tools from the chosen MCP servers (all enabled ones if omitted)."""
    values = body.model_dump(exclude={"stream"})
    return await _respond(request, agent, RunSpec(**values), body.stream)


@router.post(
    "/with-mcp",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runWithMcp",
    summary="Run a task with one server",
)
async def with_mcp(body: WithMCPRequest, request: Request, agent: AgentDep) -> Response:
    """Run a task with the tools of one MCP server (mirror of `autonomous_with_mcp`)."""
    values = body.model_dump(exclude={"stream", "mcp_name"})
    spec = RunSpec(mcp_servers=[body.mcp_name], **values)
    return await _respond(request, agent, spec, body.stream)


@router.post(
    "/with-multiple-mcps",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runWithMultipleMcps",
    summary="Run a task with several servers",
)
async def with_multiple_mcps(body: WithMultipleMCPsRequest, request: Request, agent: AgentDep) -> Response:
    """Run a task with the tools of several MCP servers (mirror of `autonomous_with_multiple_mcps`)."""
    values = body.model_dump(exclude={"stream", "mcp_names"})
    spec = RunSpec(mcp_servers=body.mcp_names, **values)
    return await _respond(request, agent, spec, body.stream)


@router.post(
    "/discover",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runDiscover",
    summary="Run a task with every server",
)
async def discover(body: DiscoverRequest, request: Request, agent: AgentDep) -> Response:
    """Run a task with every enabled MCP server's tools (mirror of `autonomous_discover_and_execute`)."""
    values = body.model_dump(exclude={"stream"})
    return await _respond(request, agent, RunSpec(**values), body.stream)
