"""The autonomous tools as an MCP server: streamable HTTP at `/mcp`, and stdio (`lmstudio-bridge mcp`).

This module imports the MCP SDK: only the front door's first request (app.front_door) and the stdio mode
import it, so a gateway that serves no MCP client never loads the SDK.

The tools call the same services as the REST routes; failures come back as `is_error` results that
carry the problem document of the REST API (same `code`), and a run reports progress per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from textwrap import shorten
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent
from pydantic import Field, TypeAdapter
from starlette.routing import Route
from starlette.types import ASGIApp

from app.errors import as_bridge_error
from app.gateway import BridgeState
from app.settings import Settings
from routers.autonomous import AutonomousRequest
from routers.mcp_approvals import elicitation_asker
from routers.mcp_resources import add_run_resources, request_access
from routers.paths import MCP_PATH
from routers.pipelines import MAX_STEPS, PipelineStep, pipeline_spec, stages_of
from services.access import Access
from services.agent import FINISHED_STATUSES, Emit, RunEvent, RunOptions, RunResult, RunSpec, result_data, run_spec
from services.agent import options as run_options
from services.agent.options import shown, validated
from services.errors import BridgeError

log = logging.getLogger("lmstudio_bridge.mcp")

PROGRESS_TEXT_MAX = 200
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


def build_mcp_server(settings: Settings, state: Callable[[], BridgeState]) -> MCPServer[Any]:
    """The MCP server; `state` returns the services the lifespan built (read at call time)."""
    server: MCPServer[Any] = MCPServer(
        "lmstudio-bridge", instructions=INSTRUCTIONS, version="0.1.0", log_level=settings.log_level
    )

    async def run(ctx: BridgeContext, *values: Any) -> RunResult:
        spec = asking_client(options(*values), ctx)
        opened = await state().agent.open(spec)
        return await opened.execute(progress_reporter(ctx))

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
        return await answer(run(ctx, task, model, [mcp_name], max_rounds, max_tokens))

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
        return await answer(run(ctx, task, model, mcp_names, max_rounds, max_tokens))

    @server.tool()
    async def autonomous_discover_and_execute(
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = None,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of every enabled MCP server."""
        return await answer(run(ctx, task, model, None, max_rounds, max_tokens))

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

        async def go() -> RunResult:
            body = validated(AutonomousRequest, {"task": task})
            spec = asking_client(pipeline_spec(body), ctx)
            pipeline = await state().agent.open_pipeline(spec, stages_of(body, steps))
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


def progress_reporter(ctx: BridgeContext) -> Emit:
    """An `emit` for `Run.execute` that sends one progress notification per run event."""
    count = 0

    async def emit(event: str, data: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        await ctx.report_progress(count, message=describe_event(event, data))

    return emit


_EVENT_TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    RunEvent.STARTED: lambda d: (
        f"run started: model {d['model']}, MCP servers: {', '.join(d['mcp_servers']) or 'none'}"
    ),
    RunEvent.ROUND_STARTED: lambda d: f"round {d['round']}: asking the model",
    RunEvent.REASONING: lambda d: f"round {d['round']}: thinking",
    RunEvent.TOOL_CALL_STARTED: lambda d: f"round {d['round']}: calling {d['name']}",
    RunEvent.TOOL_CALL_COMPLETED: lambda d: (
        f"round {d['round']}: {d['name']} {'failed' if d['is_error'] else 'done'} in {d['duration_ms']:g} ms"
    ),
    RunEvent.MESSAGE: lambda d: f"round {d['round']}: {shorten(d['content'], PROGRESS_TEXT_MAX, placeholder=' ...')}",
    RunEvent.STEP_STARTED: lambda d: f"step {d['stage']} ({d['name']}): model {d['model']}",
    RunEvent.STEP_COMPLETED: lambda d: f"step {d['stage']} ({d['name']}) ended: {d['result']['result']['status']}",
    RunEvent.APPROVAL_REQUESTED: lambda d: f"waiting for a person to approve {d['name']} ({d['tool_call_id']})",
    RunEvent.APPROVAL_DECIDED: lambda d: f"{d['name']}: {d['decision']}",
    RunEvent.COMPLETED: lambda d: f"run ended: {d['status']}",
    RunEvent.FAILED: lambda d: f"run failed: {d.get('code')}: {d.get('detail')}",
}


def describe_event(event: str, data: dict[str, Any]) -> str:
    """A one-line progress message for a run event."""
    text = _EVENT_TEXT.get(event)
    return text(data) if text else event


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
        answer["result"] = _wire(record)
    return answer


async def servers(bridge: BridgeState, access: Access | None = None) -> dict[str, Any]:
    """The configured MCP servers, as `GET /v1/mcp/servers` lists them."""
    return _wire(bridge.status.servers(access))


async def models(bridge: BridgeState, access: Access | None = None) -> dict[str, Any]:
    """The model list, as `GET /v1/models` gives it (the default model marked)."""
    return _wire(await bridge.status.models(access))


async def health(bridge: BridgeState) -> dict[str, Any]:
    """The same readiness document as `GET /readyz`."""
    return _wire(await bridge.status.readiness())


async def answer(work: Awaitable[RunResult | dict[str, Any]]) -> CallToolResult:
    """A run as its output text, a dict as JSON text, each as structured content; failures as problems."""
    try:
        value = await work
    except Exception as exc:
        return problem_result(exc)
    if isinstance(value, RunResult):
        return _result(value.output, result_data(value))
    return _result(json.dumps(value, indent=2, default=str), value)


def problem_result(exc: Exception) -> CallToolResult:
    """An `is_error` result carrying the REST API's problem document (same `code`)."""
    err = as_bridge_error(exc)
    if not isinstance(exc, BridgeError):
        log.exception("MCP tool failed unexpectedly", exc_info=exc)
    text = TextContent(type="text", text=f"{err.code}: {err.detail}")
    return CallToolResult(content=[text], structured_content=err.problem(), is_error=True)


def _result(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _wire(value: Any) -> dict[str, Any]:
    """A service's wire dataclass as the JSON the REST API gives for it."""
    return dict(TypeAdapter(type(value)).dump_python(value, mode="json"))
