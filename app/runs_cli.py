"""`lmstudio-bridge runs`: watch and steer the runs of a running gateway from a terminal.

    lmstudio-bridge runs [--status S] [--model M] [--server S] [--since T] [--limit N]   list, newest first
    lmstudio-bridge runs show RUN_ID [--full]        a readable timeline: rounds, tool calls, outputs, status
    lmstudio-bridge runs follow RUN_ID               live events, resumed after a dropped connection
    lmstudio-bridge runs approve|deny RUN_ID CALL_ID [--reason TEXT]
    lmstudio-bridge runs cancel RUN_ID

Every command takes `--url` (default $BRIDGE_URL, else http://127.0.0.1:8000) and `--json` (the API's JSON, for
scripts; `follow` writes one event per line); the API key comes from $BRIDGE_API_KEY. Colour only on a terminal
(and never with $NO_COLOR). Exit status: 0, or 1 when the gateway answers an error or cannot be reached, or
(`follow`) when the run ends other than `completed`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from app.runs_client import DEFAULT_URL, Event, GatewayError, RunsClient

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


def _client(args: argparse.Namespace) -> RunsClient:
    return RunsClient(args.url, os.environ.get("BRIDGE_API_KEY") or None)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


async def _list(args: argparse.Namespace) -> int:
    filters = {
        "status": args.status,
        "model": args.model,
        "server": args.server,
        "since": args.since,
        "limit": args.limit,
        "cursor": args.cursor,
    }
    async with _client(args) as client:
        page = await client.list(filters)
    if args.json:
        _print_json(page)
    else:
        print("\n".join(render_list(page, Style(sys.stdout))))
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        record = await client.get(args.run_id)
    if args.json:
        _print_json(record)
    else:
        print("\n".join(render_record(record, Style(sys.stdout), args.full)))
    return 0


async def _follow(args: argparse.Namespace) -> int:
    style = Style(sys.stdout)
    err = Style(sys.stderr)

    def resuming(last: int, error: Exception) -> None:
        why = str(error) or type(error).__name__
        print(err.dim(f"(connection lost: {why}; resuming after event {last})"), file=sys.stderr, flush=True)

    ok = False
    async with _client(args) as client:
        async for event in client.follow(args.run_id, args.after, args.resume_within, resuming):
            if args.json:
                print(json.dumps({"id": event.id, "event": event.event, "data": event.data}), flush=True)
            else:
                print("\n".join(render_event(event, args.run_id, style)), flush=True)
            ok = (
                event.event == "run.completed"
                and isinstance(event.data, dict)
                and event.data.get("status") == "completed"
            )
    return 0 if ok else 1


async def _decide(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        answer = await client.decide(args.run_id, args.call_id, args.action, args.reason)
    if args.json:
        _print_json(answer)
    else:
        done = "approved" if args.action == "approve" else "denied"
        print(f"{done} {args.call_id} of {args.run_id}")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        answer = await client.cancel(args.run_id)
    if args.json:
        _print_json(answer)
    else:
        print(f"cancelling {args.run_id}")
    return 0


def _options(suppress: bool) -> argparse.ArgumentParser:
    """--url and --json, on `runs` and on each of its commands (a command's own default must not override
    what was given before the command's name)."""
    options = argparse.ArgumentParser(add_help=False)
    url_default = argparse.SUPPRESS if suppress else os.environ.get("BRIDGE_URL") or DEFAULT_URL
    options.add_argument("--url", default=url_default, help="the gateway (default $BRIDGE_URL or %(default)s)")
    json_default = argparse.SUPPRESS if suppress else False
    options.add_argument("--json", action="store_true", default=json_default, help="the API's JSON, for scripts")
    return options


def add_runs_parser(sub: Any) -> None:
    """`runs` and its commands, on the console script's subparsers."""
    runs = sub.add_parser(
        "runs",
        help="list, show, follow and approve the runs of a running gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_options(suppress=False)],
    )
    runs.add_argument("--status", help="only runs with this status (completed, running, awaiting_approval...)")
    runs.add_argument("--model", help="only runs answered by this model")
    runs.add_argument("--server", help="only runs that used this MCP server")
    runs.add_argument("--since", help="only runs created at or after this ISO 8601 time")
    runs.add_argument("--limit", type=int, help="runs per page (1..200, default 20)")
    runs.add_argument("--cursor", help="the next page: `more: --cursor N` of the page before")
    runs.set_defaults(func=_run(_list))
    actions = runs.add_subparsers(dest="action", metavar="{show,follow,approve,deny,cancel}")
    common = _options(suppress=True)
    show = actions.add_parser("show", parents=[common], help="a run's timeline: rounds, tool calls, outputs")
    show.add_argument("run_id")
    show.add_argument("--full", action="store_true", help="unfold long tool outputs")
    show.set_defaults(func=_run(_show))
    follow = actions.add_parser("follow", parents=[common], help="the run's events, live")
    follow.add_argument("run_id")
    follow.add_argument("--after", type=int, default=0, help="start after this event number")
    follow.add_argument(
        "--resume-within",
        type=float,
        default=60.0,
        help="seconds to keep trying to get a dropped connection back (default %(default)s)",
    )
    follow.set_defaults(func=_run(_follow))
    for action, what in (("approve", "run"), ("deny", "refuse")):
        decide = actions.add_parser(action, parents=[common], help=f"{what} a tool call awaiting approval")
        decide.add_argument("run_id")
        decide.add_argument("call_id", help="the tool_call_id of `approval.requested`")
        decide.add_argument("--reason", default="", help="why (a denial's reason is what the model reads)")
        decide.set_defaults(func=_run(_decide))
    cancel = actions.add_parser("cancel", parents=[common], help="stop a run")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=_run(_cancel))


def _run(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(asyncio.run(command(args)))
        except GatewayError as exc:
            code = f" ({exc.code})" if exc.code else ""
            print(f"error: {exc}{code}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run
