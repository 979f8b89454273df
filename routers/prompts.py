"""GET /v1/prompts and runs started from a prompt: servers' prompts as run templates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AccessDep, AgentDep, PoolDep
from app.security import access_of
from routers.autonomous import RESPONSES, STORE, STREAM, respond
from routers.paths import named_in_path
from routers.route import Route
from routers.schemas import problem_responses
from services.agent import RunResult, run_spec
from services.agent.options import MaxRounds, MaxTokens, MCPServers, Model, Temperature, TimeoutS
from services.agent.templates import PromptList, list_prompts, prompt_conversation

router = APIRouter(prefix="/v1/prompts", tags=["prompts"], responses=problem_responses(401), route_class=Route)
ServerName = Annotated[str, Path(description="A server name from mcp.json", examples=["everything"])]
PromptName = Annotated[str, Path(description="A prompt of that server", examples=["args-prompt"])]


class PromptRunRequest(BaseModel):
    """A run from a prompt: its arguments, and the run's options (its servers: the prompt's own unless given)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"arguments": {"city": "Paris"}, "max_rounds": 5}]},
    )

    arguments: dict[str, str] = Field(default_factory=dict, description="The prompt's arguments (strings)")
    mcp_servers: MCPServers = None
    model: Model = None
    max_rounds: MaxRounds = None
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    timeout_s: TimeoutS = None
    stream: bool = STREAM
    store: bool = STORE


@router.get(
    "",
    response_model=PromptList,
    operation_id="listPrompts",
    summary="List prompts",
    responses=problem_responses(403, 404, 422, 502, 503, 504),
)
async def get_prompts(
    pool: PoolDep,
    access: AccessDep,
    server: Annotated[str | None, Query(description="Only this server's prompts")] = None,
) -> PromptList:
    """The prompts of the MCP servers the API key may use (each server is started if needed)."""
    with named_in_path():
        return await list_prompts(pool, access, server)


@router.post(
    "/{server}/{prompt}/run",
    response_model=RunResult,
    responses={**RESPONSES, **problem_responses(404)},  # 404: no such server or prompt
    operation_id="runPrompt",
    summary="Run a prompt",
)
async def run_prompt(
    server: ServerName, prompt: PromptName, body: PromptRunRequest, request: Request, pool: PoolDep, agent: AgentDep
) -> Response:
    """Run from a server's prompt: the server renders it with the arguments, and the run starts from its messages."""
    access = access_of(request.scope)
    with named_in_path():
        task, messages = await prompt_conversation(pool, access, server, prompt, body.arguments)
    spec = run_spec(body, mcp_servers=body.mcp_servers or [server], task=task, messages=messages, store=body.store)
    spec.access = access
    return await respond(request, await agent.open(spec), body.stream)
