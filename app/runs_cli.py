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
from typing import Any

from app.runs_client import DEFAULT_URL, GatewayError, RunsClient
from app.runs_view import Style, render_event, render_list, render_record


def _client(args: argparse.Namespace) -> RunsClient:
    return RunsClient(args.url, os.environ.get("BRIDGE_API_KEY") or None)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _answer(args: argparse.Namespace, value: Any, text: Callable[[], str]) -> int:
    """The API's JSON with --json, else the text for a person."""
    if args.json:
        _print_json(value)
    else:
        print(text())
    return 0


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
    return _answer(args, page, lambda: "\n".join(render_list(page, Style(sys.stdout))))


async def _show(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        record = await client.get(args.run_id)
    return _answer(args, record, lambda: "\n".join(render_record(record, Style(sys.stdout), args.full)))


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
    done = "approved" if args.action == "approve" else "denied"
    return _answer(args, answer, lambda: f"{done} {args.call_id} of {args.run_id}")


async def _cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        answer = await client.cancel(args.run_id)
    return _answer(args, answer, lambda: f"cancelling {args.run_id}")


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
