"""The autonomous tools as an MCP server: streamable HTTP at `/mcp`, and stdio (`lmstudio-bridge mcp`).

This module imports the MCP SDK: only the front door's first request (app.front_door) and the stdio mode
import it, so a gateway that serves no MCP client never loads the SDK.

The tools call the same services as the REST routes; failures come back as `is_error` results that
carry the problem document of the REST API (same `code`), and a run reports progress per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent
from pydantic import Field
from starlette.routing import Route
from starlette.types import ASGIApp

from app.gateway import BridgeState
from app.settings import Settings
from routers.autonomous import AutonomousRequest
from routers.mcp_answers import answer, describe_event, problem_result, progress_reporter, wire
from routers.mcp_approvals import elicitation_asker
from routers.mcp_resources import add_run_resources, request_access
from routers.mcp_tasks import RELATED_TASK, CoreTasksMiddleware, FrontDoorTasks, TaskViews, task_requested
from routers.paths import MCP_PATH
from routers.pipelines import MAX_STEPS, PipelineStep, pipeline_spec, stages_of
from services.access import Access
from services.agent import (
    FINISHED_STATUSES,
    RunOptions,
    RunResult,
    RunSpec,
    StageSpec,
    run_spec,
)
from services.agent import options as run_options
from services.agent.options import shown, validated

log = logging.getLogger("lmstudio_bridge.mcp")

WAIT_DEFAULT_S, WAIT_MAX_S = 30.0, 50.0  # below the ~60 s tool-call limit of MCP clients
INSTRUCTIONS = (
    "Delegate a task to a local model in LM Studio: it carries the task out with the tools of the MCP "
    "servers configured in the bridge's mcp.json and answers with the result and a record of every step."
)

# the run options' types, bounds and descriptions; checked by `options` (a violation: REST's validation_error)
Task = Annotated[str, shown(run_options.Task)]
Model = Annotated[str | None, shown(run_options.Model)]
MCPServers = Annotated[list[str] | None, shown(run_options.MCPServers)]
MaxRounds = Annotated[int | None, shown(run_options.MaxRounds)]
MaxTokens = Annotated[int | None, shown(run_options.MaxTokens)]
BridgeContext = Context[Any, Any]
# the tools that run a task: called as a protocol task (routers.mcp_tasks), each starts a background run
RUN_TOOLS = frozenset(
    {"autonomous_with_mcp", "autonomous_with_multiple_mcps", "autonomous_discover_and_execute", "autonomous_pipeline"}
)


def build_mcp_server(settings: Settings, state: Callable[[], BridgeState]) -> MCPServer[Any]:
    """The MCP server; `state` returns the services the lifespan built (read at call time)."""
    views = TaskViews(state)
    server: MCPServer[Any] = MCPServer(
        "lmstudio-bridge",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        log_level=settings.log_level,
        extensions=[FrontDoorTasks(state, views)],
        middleware=[CoreTasksMiddleware(RUN_TOOLS)],
    )

    runs = RunTools(state, views)
    run, as_task = runs.run, runs.as_task

    @server.tool()
    async def autonomous_with_mcp(
        mcp_name: Annotated[str, Field(description="The MCP server whose tools the model may use")],
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of one MCP server."""
        return await run(ctx, task, model, [mcp_name], max_rounds, max_tokens)

    @server.tool()
    async def autonomous_with_multiple_mcps(
        mcp_names: Annotated[list[str], Field(description="The MCP servers whose tools the model may use")],
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of several MCP servers."""
        return await run(ctx, task, model, mcp_names, max_rounds, max_tokens)

    @server.tool()
    async def autonomous_discover_and_execute(
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of every enabled MCP server."""
        return await run(ctx, task, model, None, max_rounds, max_tokens)

    @server.tool()
    async def autonomous_pipeline(
        task: Task,
        steps: Annotated[
            list[PipelineStep],
            Field(
                description="The steps, run in order, each an ordinary run: model, mcp_servers, allowed_tools, "
                "instruction ({task}, {previous_output}, {steps.<name>.output}), on_failure, unload_after",
                min_length=1,
                max_length=MAX_STEPS,
            ),
        ],
        ctx: BridgeContext,
    ) -> CallToolResult:
        """Let local models carry out a task in steps, each with its own model and tools (e.g. a reasoning model
        analyses with read-only tools, then a coding model acts); each step's output feeds the next."""

        def body() -> AutonomousRequest:
            return validated(AutonomousRequest, {"task": task})

        if task_requested(ctx):
            return await as_task(ctx, lambda: pipeline_spec(body()), lambda: stages_of(body(), steps))

        async def go() -> RunResult:
            request = body()
            spec = asking_client(pipeline_spec(request), ctx)
            pipeline = await state().agent.open_pipeline(spec, stages_of(request, steps))
            return await pipeline.execute(progress_reporter(ctx))

        return await answer(go())

    _add_status_tools(server, state)
    add_run_resources(server, state)
    return server


def options(
    task: str, model: str | None, mcp_servers: list[str] | None, max_rounds: int | None, max_tokens: int | None
) -> RunSpec:
    """The run spec of a tool's arguments, checked against the same bounds as REST."""
    values = {"model": model, "mcp_servers": mcp_servers, "max_rounds": max_rounds, "max_tokens": max_tokens}
    return run_spec(validated(_ToolRun, {"task": task, **values}))


def asking_client(spec: RunSpec, ctx: BridgeContext) -> RunSpec:
    """The spec of a run the tool call carries out itself: the key's scope and, when the client can answer an
    elicitation, its calls that need approval ask the client (else they are denied, as for any synchronous run)."""
    spec.access = key_access(ctx)
    spec.asker = elicitation_asker(ctx)
    spec.interactive = spec.asker is not None
    return spec


class RunTools:
    """How the run tools carry out a run: within the call, or, called as a task, in the background."""

    def __init__(self, state: Callable[[], BridgeState], views: TaskViews) -> None:
        self._state = state
        self._views = views

    async def run(self, ctx: BridgeContext, *values: Any) -> CallToolResult:
        """The run of a tool's arguments (`options`): carried out within the call, or, called as a task, started
        in the background and answered with the task at once."""
        if task_requested(ctx):
            return await self.as_task(ctx, lambda: options(*values))
        return await answer(self._run_here(ctx, *values))

    async def _run_here(self, ctx: BridgeContext, *values: Any) -> RunResult:
        spec = asking_client(options(*values), ctx)
        opened = await self._state().agent.open(spec)
        return await opened.execute(progress_reporter(ctx))

    async def as_task(
        self,
        ctx: BridgeContext,
        spec_of: Callable[[], RunSpec],
        stages_of_spec: Callable[[], list[StageSpec]] | None = None,
    ) -> CallToolResult:
        """Start the run in the background (as `start_task` does) and answer with its task (routers.mcp_tasks
        turns the answer into the protocol's `CreateTaskResult`)."""
        runs = self._state().runs
        try:
            spec = spec_of()
            spec.access = key_access(ctx)
            run = await runs.submit(spec, stages_of_spec() if stages_of_spec else None)
            record = await runs.get(run.run_id, spec.access)
        except Exception as exc:
            return problem_result(exc)
        text = TextContent(type="text", text=f"Task {record.run_id} started ({record.status}): poll it with tasks/get")
        return CallToolResult(
            content=[text],
            structured_content=self._views.started(record, ctx.protocol_version),
            meta={RELATED_TASK: {"taskId": record.run_id}},
        )


class _ToolRun(RunOptions):
    task: run_options.Task


def _add_status_tools(server: MCPServer[Any], state: Callable[[], BridgeState]) -> None:
    """The tools that start and poll background runs, and the listings."""

    @server.tool()
    async def start_task(
        task: Task,
        ctx: BridgeContext,
        mcp_servers: MCPServers = None,
        model: Model = None,
        max_rounds: MaxRounds = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Start a task in the background and return its run id at once; poll it with get_task_result.
        For long tasks: each call stays well within a client's tool-call time limit."""

        async def start() -> dict[str, Any]:
            spec = options(task, model, mcp_servers, max_rounds, max_tokens)
            spec.access = key_access(ctx)
            return await started(state(), spec)

        return await answer(start())

    @server.tool()
    async def get_task_result(
        run_id: Annotated[str, Field(description="The run id start_task returned")],
        ctx: BridgeContext,
        wait_s: Annotated[
            float, Field(ge=0, le=WAIT_MAX_S, description=f"Seconds to wait for the end (0-{WAIT_MAX_S:g})")
        ] = WAIT_DEFAULT_S,
    ) -> CallToolResult:
        """The task's status and progress; once it has ended, its result. Waits up to `wait_s` seconds."""
        return await answer(task_result(state(), run_id, wait_s, key_access(ctx)))

    @server.tool()
    async def list_available_mcps(ctx: BridgeContext) -> CallToolResult:
        """The MCP servers of the bridge's mcp.json (those the API key may use) with their status and tool counts."""
        return await answer(servers(state(), key_access(ctx)))

    @server.tool()
    async def list_models(ctx: BridgeContext) -> CallToolResult:
        """LM Studio's models the API key may use (type, loaded or not, context length, tool use), the default one."""
        return await answer(models(state(), key_access(ctx)))

    @server.tool()
    async def health_check() -> CallToolResult:
        """Whether LM Studio answers, and the status of every MCP server."""
        return await answer(health(state()))


def http_endpoint(server: MCPServer[Any], settings: Settings) -> ASGIApp:
    """The handler of the streamable HTTP route at exactly `/mcp`; the caller runs `server.session_manager`
    (app.front_door: in a task of its own)."""
    # host: bound to loopback, the SDK accepts only loopback Host/Origin headers (DNS-rebinding protection)
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=settings.host)
    [route] = [r for r in app.routes if isinstance(r, Route) and r.path == MCP_PATH]
    return route.handle


def key_access(ctx: BridgeContext | None) -> Access | None:
    """The API key's scope, from the HTTP request the tool call came in (None over stdio, or without keys)."""
    try:
        request = ctx.request_context.request if ctx is not None else None
    except ValueError:  # no request context (called outside a request)
        return None
    return request_access(request)


async def started(bridge: BridgeState, spec: RunSpec) -> dict[str, Any]:
    run = await bridge.runs.submit(spec)
    return {"run_id": run.run_id, "status": run.status}


async def task_result(bridge: BridgeState, run_id: str, wait_s: float, access: Access | None) -> dict[str, Any]:
    """Where a background run stands: `done`, `status`, `progress` and, once done, `result`."""
    record = await bridge.runs.wait(run_id, wait_s, access)
    done = record.status in FINISHED_STATUSES
    last = await bridge.store.last_event(run_id)
    progress = {
        "rounds": record.rounds,
        "tool_calls": len(record.steps),
        "last_event": describe_event(last.event, json.loads(last.data)) if last else None,
    }
    answer: dict[str, Any] = {"run_id": run_id, "status": record.status, "done": done, "progress": progress}
    if done:
        answer["result"] = wire(record)
    return answer


async def servers(bridge: BridgeState, access: Access | None = None) -> dict[str, Any]:
    """The configured MCP servers, as `GET /v1/mcp/servers` lists them."""
    return wire(await bridge.status.servers(access))


async def models(bridge: BridgeState, access: Access | None = None) -> dict[str, Any]:
    """The model list, as `GET /v1/models` gives it (the default model marked)."""
    return wire(await bridge.status.models(access))


async def health(bridge: BridgeState) -> dict[str, Any]:
    """The same readiness document as `GET /readyz`."""
    return wire(await bridge.status.readiness())
