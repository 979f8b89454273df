"""One tool call of a run, from the model's call to the recorded step: resolved, checked, run and announced
(`tool_call.started` / `tool_call.completed`). The step keeps the whole output; what the model reads of it
is cut by the loop (BRIDGE_TOOL_OUTPUT_MAX_CHARS, then the context window)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.agent.approvals import Decision, Verdict
from services.agent.arguments import Rejected, Written, check_arguments, maybe_json
from services.agent.ports import Tools
from services.agent.records import Emit, RunEvent, Step, step_data
from services.errors import BridgeError
from services.lmstudio import ToolCall
from services.mcp import ToolSet, ToolSpec
from services.text import scrub

# a call's timeout (s), the progress notifications that reset it, the limit that cut it (None: none did)
_Clock = tuple[float | None, int, Any]
_NO_CLOCK: _Clock = (None, 0, None)

# asks a person about a call (call id, tool, checked arguments) when the tool needs approval; None: it does not
Approve = Callable[[str, ToolSpec, Any], Awaitable[Decision | None]]


async def run_tool_call(
    pool: Tools, tools: ToolSet, round_no: int, call: ToolCall, emit: Emit, approve: Approve, repair: bool = False
) -> Step:
    """Run one call; whatever goes wrong becomes the step's error output, for the model to read. `repair`: the
    `repair` aid (arguments repaired to the schema beyond type conversion)."""
    call_id, name, raw_args = scrub(call.id), scrub(call.name), call.arguments
    written = Written.of(raw_args)  # parsed once: the event, the check and the step read it
    spec = tools.resolve(name)
    where = {"server": spec.server if spec else None, "tool": spec.name if spec else None}
    started_event = {"round": round_no, "tool_call_id": call_id, "name": name, **where}
    await emit(RunEvent.TOOL_CALL_STARTED, {**started_event, "arguments": written.shown()})
    started = time.monotonic()
    arguments: Any = raw_args
    verdict: Verdict | None = None
    clock: _Clock = _NO_CLOCK
    if spec is None:
        output, is_error = unknown_tool(tools, name), True
    else:
        arguments, output, is_error, verdict, clock = await _invoke(pool, spec, call_id, written, approve, repair)
    step = Step(
        round=round_no,
        tool_call_id=call_id,
        name=name,
        server=where["server"],
        tool=where["tool"],
        arguments=arguments,
        output=output,
        is_error=is_error,
        duration_ms=round((time.monotonic() - started) * 1000, 2),
        recovered_from=call.recovered_from,
        arguments_repaired=call.repaired,
        arguments_coerced=spec is not None and isinstance(arguments, dict) and arguments != written.value,
        approval=verdict,
        timeout_s=clock[0],
        progress_resets=clock[1],
        timed_out=clock[2],
    )
    await emit(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
    return step


def unknown_tool(tools: ToolSet, name: str) -> str:
    names = ", ".join(t.model_name for t in tools.tools) or "(none)"
    return f"Error: there is no tool named {name!r}. Available tools: {names}"


async def _invoke(
    pool: Tools, spec: ToolSpec, call_id: str, written: Written, approve: Approve, repair: bool
) -> tuple[Any, str, bool, Verdict | None, _Clock]:
    checked = check_arguments(spec, written, repair)
    if isinstance(checked, Rejected):
        return checked.arguments, checked.message, True, None, _NO_CLOCK
    decision = await approve(call_id, spec, checked)  # the person sees exactly the arguments that would run
    if decision is not None and not decision.approved:
        return checked, decision.message(), True, decision.verdict, _NO_CLOCK
    verdict = decision.verdict if decision else None
    try:
        # checked for text UTF-8 cannot encode: the pool need not walk them again
        result = await pool.call_tool(spec.server, spec.name, checked, text_checked=True)
    except BridgeError as exc:  # unavailable server, timeout, vanished tool: the model reads why
        x = exc.extras
        return (
            checked,
            f"Error: {exc.detail}",
            True,
            verdict,
            (x.get("timeout_s"), x.get("progress_resets", 0), x.get("limit")),
        )
    return checked, result.text, result.is_error, verdict, (result.timeout_s, result.progress_resets, None)


async def answered_step(
    round_no: int, call: ToolCall, emit: Emit, answer: str, *, server: str | None = None, tool: str | None = None
) -> Step:
    """A call the gateway answers itself (its built-in tools, a tool that was not offered): announced and recorded
    like any other; `answer` starting with "Error:" marks it an error."""
    call_id, name = scrub(call.id), scrub(call.name)
    started_event = {"round": round_no, "tool_call_id": call_id, "name": name, "server": server, "tool": tool}
    await emit(RunEvent.TOOL_CALL_STARTED, {**started_event, "arguments": maybe_json(scrub(call.arguments))})
    step = Step(
        round=round_no,
        tool_call_id=call_id,
        name=name,
        server=server,
        tool=tool,
        arguments=maybe_json(call.arguments),
        output=answer,
        is_error=answer.startswith("Error:"),
        duration_ms=0.0,
        recovered_from=call.recovered_from,
        arguments_repaired=call.repaired,
    )
    await emit(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
    return step
