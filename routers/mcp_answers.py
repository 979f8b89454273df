"""How the front door's tools answer: a run's result (its output as text, its record as structured content), a
failure as the REST API's problem document, a run's events as progress notifications.

This module imports the MCP SDK: only the front door (routers.mcp_front, routers.mcp_tasks) imports it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import fields
from textwrap import shorten
from typing import Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import TypeAdapter

from app.errors import as_bridge_error
from services.agent import Emit, RunEvent, RunResult, result_data
from services.errors import BridgeError
from services.runs import RunRecord

log = logging.getLogger("lmstudio_bridge.mcp")

PROGRESS_TEXT_MAX = 200


def progress_reporter(ctx: Context[Any, Any]) -> Emit:
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
    return _problem(err.problem())


def record_result(record: RunRecord) -> CallToolResult:
    """A finished run's record as its tool's result: the same result the tool gives when it runs the task itself
    (a failed or interrupted run: its problem document)."""
    if record.status in ("failed", "interrupted") and record.error is not None:
        return _problem(record.error)
    result = RunResult(**{f.name: getattr(record, f.name) for f in fields(RunResult)})
    return _result(record.output, result_data(result))


def _problem(problem: dict[str, Any]) -> CallToolResult:
    text = TextContent(type="text", text=f"{problem.get('code')}: {problem.get('detail')}")
    return CallToolResult(content=[text], structured_content=problem, is_error=True)


def _result(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def wire(value: Any) -> dict[str, Any]:
    """A service's wire dataclass as the JSON the REST API gives for it."""
    return dict(TypeAdapter(type(value)).dump_python(value, mode="json"))
