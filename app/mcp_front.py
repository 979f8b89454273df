"""The autonomous tools as an MCP server: streamable HTTP at `/mcp`, and stdio (`lmstudio-bridge mcp`).

The tools call the same services as the REST routes; failures come back as `is_error` results that
carry the problem document of the REST API (same `code`), and a run reports progress per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from textwrap import shorten
from typing import Annotated, Any, cast

from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent
from pydantic import Field
from starlette.routing import BaseRoute

from app.errors import as_bridge_error
from app.lifespan import MCPSetup, lifespan_for
from app.settings import Settings
from app.state import BridgeState
from services.agent import Emit, RunResult, RunSpec
from services.errors import BridgeError, LLMError, ModelNotFoundError

log = logging.getLogger("lmstudio_bridge.mcp")

MCP_PATH = "/mcp"
PROGRESS_TEXT_MAX = 200
INSTRUCTIONS = (
    "Delegate a task to a local model in LM Studio: it carries the task out with the tools of the MCP "
    "servers configured in the bridge's mcp.json and answers with the result and a record of every step."
)

Task = Annotated[str, Field(description="What the local model should do")]
Model = Annotated[str | None, Field(description='Model id or alias; null or "default" picks the default model')]
MaxRounds = Annotated[int, Field(description="Tool rounds before a final answer is asked for (1-100)")]
MaxTokens = Annotated[int | None, Field(description="max_tokens of each LM Studio call")]
BridgeContext = Context[Any, Any]


def build_mcp_server(settings: Settings, state: Callable[[], BridgeState]) -> MCPServer[Any]:
    """The MCP server; `state` returns the services the lifespan built (read at call time)."""
    server: MCPServer[Any] = MCPServer(
        "lmstudio-bridge", instructions=INSTRUCTIONS, version="0.1.0", log_level=settings.log_level
    )
    rounds = settings.max_rounds_default

    async def run(ctx: BridgeContext, spec: RunSpec) -> RunResult:
        opened = await state().agent.open(spec)
        return await opened.execute(progress_reporter(ctx))

    @server.tool()
    async def autonomous_with_mcp(
        mcp_name: Annotated[str, Field(description="The MCP server whose tools the model may use")],
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = rounds,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of one MCP server."""
        spec = RunSpec(task=task, mcp_servers=[mcp_name], model=model, max_rounds=max_rounds, max_tokens=max_tokens)
        return await answer(run(ctx, spec))

    @server.tool()
    async def autonomous_with_multiple_mcps(
        mcp_names: Annotated[list[str], Field(description="The MCP servers whose tools the model may use")],
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = rounds,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of several MCP servers."""
        spec = RunSpec(task=task, mcp_servers=mcp_names, model=model, max_rounds=max_rounds, max_tokens=max_tokens)
        return await answer(run(ctx, spec))

    @server.tool()
    async def autonomous_discover_and_execute(
        task: Task,
        ctx: BridgeContext,
        model: Model = None,
        max_rounds: MaxRounds = rounds,
        max_tokens: MaxTokens = None,
    ) -> CallToolResult:
        """Let a local model carry out a task with the tools of every enabled MCP server."""
        spec = RunSpec(task=task, model=model, max_rounds=max_rounds, max_tokens=max_tokens)
        return await answer(run(ctx, spec))

    @server.tool()
    async def list_available_mcps() -> CallToolResult:
        """The MCP servers of the bridge's mcp.json with their status and tool counts."""
        return await answer(servers(state()))

    @server.tool()
    async def list_models() -> CallToolResult:
        """LM Studio's models (type, loaded or not, context length, tool use) and the default one."""
        return await answer(models(state()))

    @server.tool()
    async def health_check() -> CallToolResult:
        """Whether LM Studio answers, and the status of every MCP server."""
        return await answer(health(state()))

    return server


def http_routes(server: MCPServer[Any], settings: Settings) -> list[BaseRoute]:
    """The streamable HTTP route at exactly `/mcp` (its session manager runs in the app's lifespan)."""
    # host: bound to loopback, the SDK accepts only loopback Host/Origin headers (DNS-rebinding protection)
    return list(server.streamable_http_app(streamable_http_path=MCP_PATH, host=settings.host).routes)


async def serve_stdio(settings: Settings, mcp: MCPSetup) -> None:
    """Serve the tools over stdin/stdout with the services the app's lifespan builds (no HTTP)."""
    app = FastAPI(lifespan=lifespan_for(settings, mcp))
    server = build_mcp_server(settings, lambda: cast(BridgeState, app.state.bridge))
    async with app.router.lifespan_context(app):
        await server.run_stdio_async()


def progress_reporter(ctx: BridgeContext) -> Emit:
    """An `emit` for `Run.execute` that sends one progress notification per run event."""
    count = 0

    async def emit(event: str, data: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        await ctx.report_progress(count, message=describe_event(event, data))

    return emit


_EVENT_TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    "run.started": lambda d: f"run started: model {d['model']}, MCP servers: {', '.join(d['mcp_servers']) or 'none'}",
    "round.started": lambda d: f"round {d['round']}: asking the model",
    "tool_call.started": lambda d: f"round {d['round']}: calling {d['name']}",
    "tool_call.completed": lambda d: (
        f"round {d['round']}: {d['name']} {'failed' if d['is_error'] else 'done'} in {d['duration_ms']:g} ms"
    ),
    "message": lambda d: f"round {d['round']}: {shorten(d['content'], PROGRESS_TEXT_MAX, placeholder=' ...')}",
}


def describe_event(event: str, data: dict[str, Any]) -> str:
    """A one-line progress message for a run event."""
    text = _EVENT_TEXT.get(event)
    return text(data) if text else event


async def servers(bridge: BridgeState) -> dict[str, Any]:
    """The configured MCP servers (secret-free), as `GET /v1/mcp/servers` lists them."""
    path = str(bridge.mcp_config_path) if bridge.mcp_config_path else None
    return {"data": [asdict(s) for s in bridge.pool.status()], "config_path": path}


async def models(bridge: BridgeState) -> dict[str, Any]:
    """The model list with the id a run without `model` would use."""
    snap = await bridge.catalog.snapshot()
    try:
        default: str | None = (await bridge.catalog.resolve(None)).id
    except ModelNotFoundError:
        default = None
    return {
        "models": [asdict(m) for m in snap.models],
        "default": default,
        "aliases": bridge.catalog.aliases,
        "stale": snap.stale,
    }


async def health(bridge: BridgeState) -> dict[str, Any]:
    """LM Studio reachability and every MCP server's status."""
    lmstudio: dict[str, Any] = {"url": bridge.lmstudio.base_url, "ok": True}
    try:
        await bridge.lmstudio.ping()
    except LLMError as exc:
        lmstudio.update(ok=False, error=exc.detail, code=exc.code)
    return {
        "status": "ready" if lmstudio["ok"] else "not_ready",
        "lmstudio": lmstudio,
        "mcp_servers": {s.name: s.status for s in bridge.pool.status()},
        "runs_in_flight": bridge.limiter.in_flight,
    }


async def answer(work: Awaitable[RunResult | dict[str, Any]]) -> CallToolResult:
    """A run as its output text, a dict as JSON text, each as structured content; failures as problems."""
    try:
        value = await work
    except Exception as exc:
        return problem_result(exc)
    if isinstance(value, RunResult):
        return _result(value.output, value.to_dict())
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
