"""How `lmstudio-bridge runs` shows runs to a person: a list, a run's timeline, live events (colour on a terminal)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TextIO

from app.runs_client import Event

FOLD_LINES = 4  # an output is folded to this many lines (`show --full` unfolds)
FOLD_CHARS = 400
ARGS_CHARS = 200
TASK_CHARS = 60
STATUS_COLOURS = {
    "completed": "32",
    "running": "36",
    "queued": "36",
    "awaiting_approval": "33;1",
    "max_rounds": "33",
    "length": "33",
    "loop": "33",
    "timeout": "33",
    "context_exceeded": "33",
    "cancelled": "35",
    "interrupted": "35",
    "failed": "31;1",
}


class Style:
    """ANSI colour when writing to a terminal (and NO_COLOR is not set); plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.on = stream.isatty() and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on and code else text

    def status(self, status: str) -> str:
        return self(status, STATUS_COLOURS.get(status, ""))

    def dim(self, text: str) -> str:
        return self(text, "2")

    def bold(self, text: str) -> str:
        return self(text, "1")


def _one_line(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fold(text: str, indent: str, full: bool = False) -> list[str]:
    """A tool's output, indented; past FOLD_LINES lines or FOLD_CHARS characters folded with what is hidden."""
    lines = text.rstrip("\n").splitlines() or [""]
    if full:
        return [indent + line for line in lines]
    shown, used = [], 0
    for line in lines[:FOLD_LINES]:
        if used + len(line) > FOLD_CHARS:
            shown.append(line[: max(0, FOLD_CHARS - used)] + "...")
            break
        shown.append(line)
        used += len(line)
    hidden_lines = len(lines) - len(shown)
    hidden_chars = len(text) - sum(len(s) for s in shown)
    out = [indent + line for line in shown]
    if hidden_lines > 0 or hidden_chars > len(lines):
        out.append(f"{indent}... ({len(lines)} lines, {len(text)} characters; --full shows all)")
    return out


def _duration(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


# --- list --------------------------------------------------------------------------------------------------


def render_list(page: dict[str, Any], style: Style) -> list[str]:
    runs = page.get("data", [])
    if not runs:
        return ["no runs"]
    rows = [("RUN", "STATUS", "MODEL", "SERVERS", "ROUNDS", "CREATED", "TASK")]
    for run in runs:
        created = str(run.get("created_at") or "")[:19].replace("T", " ")
        rows.append(
            (
                run["run_id"],
                run.get("status", ""),
                run.get("model") or "-",
                ",".join(run.get("mcp_servers") or []) or "-",
                str(run.get("rounds", 0)),
                created,
                _one_line(run.get("task") or "", TASK_CHARS),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:6])]
        if index == 0:
            lines.append(style.bold("  ".join([*cells, row[6]])))
            continue
        cells[1] = style.status(row[1]) + " " * (widths[1] - len(row[1]))
        lines.append("  ".join([*cells, row[6]]))
    if page.get("next_cursor"):
        lines.append(style.dim(f"more: --cursor {page['next_cursor']}"))
    return lines


# --- show --------------------------------------------------------------------------------------------------


def render_record(record: dict[str, Any], style: Style, full: bool = False) -> list[str]:
    status = str(record.get("status", ""))
    usage = record.get("usage") or {}
    lines = [
        f"{style.bold(record['run_id'])}  {style.status(status)}",
        f"  model    {record.get('model') or record.get('model_requested') or '-'}",
        f"  servers  {', '.join(record.get('mcp_servers') or []) or '-'}",
        f"  task     {_one_line(record.get('task') or '', 200)}",
        f"  created  {record.get('created_at') or '-'}   finished {record.get('finished_at') or '-'}",
        f"  rounds   {record.get('rounds', 0)}   tokens {usage.get('total_tokens', 0)}   "
        f"duration {_duration(record.get('duration_ms'))}",
    ]
    steps = record.get("steps") or []
    current = None
    for step in steps:
        if step.get("round") != current:
            current = step.get("round")
            lines.append(style.bold(f"round {current}"))
        lines.extend(render_step(step, style, full))
    for warning in record.get("warnings") or []:
        lines.append(style("warning: " + _one_line(warning, 300), "33"))
    error = record.get("error")
    if error:
        lines.append(style(f"error: {error.get('detail')} ({error.get('code')})", "31"))
    output = record.get("output")
    if output:
        lines.append(style.bold("output"))
        lines.extend(fold(str(output), "  ", full=True))
    elif status in ("running", "queued", "awaiting_approval"):
        lines.append(style.dim(f"(not finished: lmstudio-bridge runs follow {record['run_id']})"))
    return lines


def render_step(step: dict[str, Any], style: Style, full: bool) -> list[str]:
    name = step.get("name") or f"{step.get('server')}__{step.get('tool')}"
    verdict = style("error", "31") if step.get("is_error") else style("ok", "32")
    extra = f", {step['approval']}" if step.get("approval") else ""
    head = f"  -> {style.bold(name)} {_one_line(step.get('arguments'), ARGS_CHARS)}"
    lines = [head, f"     <- {verdict} {_duration(step.get('duration_ms'))}{extra} [{step.get('tool_call_id', '')}]"]
    lines.extend(fold(str(step.get("output") or ""), "        ", full))
    return lines


# --- follow ------------------------------------------------------------------------------------------------


def _started(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    tools = data.get("tools") or []
    servers = ", ".join(data.get("mcp_servers") or []) or "none"
    return [f"{style.bold('run ' + run_id)} started: model {data.get('model')}, servers {servers}, {len(tools)} tools"]


def _round(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    suffix = "" if data.get("tools", True) else " (final answer, no tools)"
    return [style.bold(f"round {data.get('round')}{suffix}")]


def _call_started(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    return [f"  -> {style.bold(str(data.get('name')))} {_one_line(data.get('arguments'), ARGS_CHARS)}"]


def _call_completed(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    verdict = style("error", "31") if data.get("is_error") else style("ok", "32")
    head = f"  <- {data.get('name')} {verdict} {_duration(data.get('duration_ms'))}"
    return [head, *fold(str(data.get("output") or ""), "       ")]


def _approval_requested(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    call = data.get("tool_call_id")
    return [
        style(f"  ? approval needed: {data.get('name')} {_one_line(data.get('arguments'), ARGS_CHARS)}", "33;1"),
        f"    lmstudio-bridge runs approve {run_id} {call}   (or: runs deny {run_id} {call} --reason ...)",
    ]


def _approval_decided(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    reason = f": {data['reason']}" if data.get("reason") else ""
    return [f"  approval {data.get('decision')} for {data.get('name')}{reason}"]


def _completed(data: dict[str, Any], run_id: str, style: Style) -> list[str]:
    usage = data.get("usage") or {}
    summary = (
        f"{style.status(str(data.get('status')))} after {data.get('rounds', 0)} round(s), "
        f"{usage.get('total_tokens', 0)} tokens, {_duration(data.get('duration_ms'))}"
    )
    return [summary, *fold(str(data.get("output") or ""), "  ", full=True)]


_RENDERERS: dict[str, Callable[[dict[str, Any], str, Style], list[str]]] = {
    "run.started": _started,
    "round.started": _round,
    "model.answered": lambda d, r, s: [
        s.dim(
            f"  model {d.get('model')} on {d.get('host') or 'LM Studio'}: {d.get('prompt_tokens', 0)} in, "
            f"{d.get('completion_tokens', 0)} out, {_duration(d.get('duration_ms'))}, {d.get('finish_reason')}"
        )
    ],
    "reasoning": lambda d, r, s: [s.dim("  thinking: " + _one_line(d.get("content", ""), 300))],
    "tool_call.started": _call_started,
    "tool_call.completed": _call_completed,
    "message": lambda d, r, s: ["  says: " + _one_line(d.get("content", ""), 300)],
    "approval.requested": _approval_requested,
    "approval.decided": _approval_decided,
    "step.started": lambda d, r, s: [s.bold(f"== step {d.get('stage')} {d.get('name')} (model {d.get('model')})")],
    "step.completed": lambda d, r, s: [s.bold(f"== step {d.get('stage')} {d.get('name')} done")],
    "run.completed": _completed,
    "run.failed": lambda d, r, s: [s(f"failed: {d.get('detail')} ({d.get('code')})", "31;1")],
}


def render_event(event: Event, run_id: str, style: Style) -> list[str]:
    """One event of `follow` for a person."""
    data = event.data if isinstance(event.data, dict) else {"content": event.data}
    render = _RENDERERS.get(event.event)
    return render(data, run_id, style) if render else [f"  {event.event}: {_one_line(data, 300)}"]


# --- commands ----------------------------------------------------------------------------------------------
