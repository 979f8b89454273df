"""Where the gateway's CPU goes on the run path: py-spy samples the gateway process during autonomous runs
(or, with ``--tool SERVER``, during sequential REST tool calls: ``POST /v1/mcp/servers/<server>/tools/echo``;
with ``--chat``, during sequential pass-through chats, ``POST /v1/chat/completions``, bench/passthrough.py's).

Not a section of `make bench` (it needs py-spy, ``.venv/bin/pip install py-spy``, and ptrace rights). It
starts the run benchmark's set-up of bench/run_upstreams.py (an upstream, the real time server, a gateway at
the given log level), warms up, then runs sequential `POST /v1/autonomous` runs while
``py-spy record --format raw`` samples the gateway (idle samples left out, so shares are of the CPU the
gateway burns), and prints the top functions by self time and by inclusive time, and self time by package.

Run: ``.venv/bin/python -m bench.profile_run [--upstream stdlib|mock] [--log-level INFO|WARNING]
[--seconds 20] [--rate 250] [--top 25] [--tool everything|fault | --chat] [--out profile.txt]``; the raw stacks
(``--out``) open in speedscope.app as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import stdlib_upstream as stdlib_fake
from bench.common import (
    Call,
    Server,
    gateway,
    http_client,
    mock_lmstudio,
    nothing_listening,
    post_json,
    stdlib_upstream,
    write_mcp_config,
)
from bench.passthrough import BODY as CHAT_BODY
from bench.passthrough import PATH as CHAT_PATH
from bench.run_upstreams import QUESTION, SERVER
from tests.helpers import TIME_CALL, script

WARMUP = 100
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")  # native frames have no line
PROJECT = ("app/", "services/", "routers/")
ENTRY = ("app/cli.py", "app/server.py")  # on every stack: the process's main, not the run path
# --tool: the `echo` tool of these servers (bench/mcp_call.py's), with its arguments
ECHO_ARGUMENTS = {"fault": {"text": "hi"}, "everything": {"message": "hi"}}


def _parse(frame: str) -> tuple[str, str]:
    """(function key without the line number, file) of one py-spy frame."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return f"{match['func']} ({match['file']})", match["file"]


def package(file: str) -> str:
    """What a file belongs to: the project's top-level package, a library, or the standard library."""
    if not file or file.startswith("<"):
        return "interpreter"
    if ".so" in file:
        return f"native: {file.split('.so')[0]}"  # libc (syscalls), libpython
    if file.endswith((".c", ".h")):
        return "native: C code (CPython, C extensions)"
    if file.startswith(PROJECT):
        return "gateway: " + file.split("/")[0] + "/" + (file.split("/")[1] if file.count("/") > 1 else "")
    head = file.split("/")[0]
    return head.removesuffix(".py")


# what a sample's stack does, first match wins (function names as py-spy shows them, without the file)
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("logging (records, JSON formatting, writes)", ("Logger.info", "Logger.warning", "Logger._log", "Handler.handle")),
    ("model list re-fetched (ModelCatalog._load)", ("ModelCatalog._load",)),
    ("LLM hops (LMStudioClient.chat: payload, request, response, parse)", ("LMStudioClient.chat",)),
    (
        "LM Studio HTTP I/O outside the hop's task (aiohttp writer task, response callbacks)",
        ("ClientRequest.write_bytes", "ResponseHandler.data_received"),
    ),
    ("tool call (Run._call: MCPPool.call_tool, MCP SDK client)", ("Run._call",)),
    (
        "MCP SDK stdio tasks (stdin writer, stdout reader, JSON-RPC dispatcher)",
        ("stdio_client.<locals>.stdin_writer", "stdio_client.<locals>.stdout_reader", "JSONRPCDispatcher.run"),
    ),
    ("agent run, rest (Run.execute: set-up, steps, result)", ("Run.execute",)),
    (
        "inbound HTTP (uvicorn, FastAPI, middleware, route, response)",
        ("RequestResponseCycle.run_asgi", "HttpToolsProtocol.data_received"),
    ),
]


def stage(frames: list[tuple[str, str]]) -> str:
    """The stage of one stack, (function, file) pairs from the outermost frame on."""
    names = {key.split(" (")[0] for key, _ in frames}
    for label, markers in STAGES:
        if names.intersection(markers):
            return label
    python = [key.split(" (")[0] for key, file in frames if file.endswith(".py")]
    if python and python[-1] == "Runner.run":
        return "event loop itself (uvloop: callbacks, socket I/O)"
    return "other"


POLL = ("epoll_pwait", "epoll_wait")  # native leaf frames of the event loop's poll
# worker threads waiting for work (py-spy --native counts their futex wait as running): the innermost Python
# frame is the thread's loop itself, not the work it was given
IDLE_THREADS = ("_worker (concurrent/futures/thread.py)", "_connection_worker_thread (aiosqlite/core.py)")


def analyse(raw: str, top: int, cpu_ms_per_run: float | None = None) -> str:
    """Markdown tables of a py-spy raw (collapsed stacks) profile.

    py-spy leaves out samples of a thread it sees sleeping, but not every sample taken in the event loop's
    poll: those (the leaf is uvloop's run loop without --native, epoll_pwait with it) and those of worker
    threads waiting for work (IDLE_THREADS) are counted apart and left out of the shares, which are then
    shares of the CPU the gateway burns. With `cpu_ms_per_run` each share is also shown as ms of CPU per run.
    """
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    project_inclusive: Counter[str] = Counter()
    charged: Counter[str] = Counter()  # to the innermost gateway frame, libraries it called included
    stages: Counter[str] = Counter()
    total = polling = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        leaf, leaf_file = frames[-1]
        innermost_python = next((key for key, file in reversed(frames) if file.endswith(".py")), "")
        if leaf.startswith(POLL) or leaf.startswith("Runner.run ") or innermost_python in IDLE_THREADS:
            polling += count
            continue
        total += count
        stages[stage(frames)] += count
        self_time[leaf] += count
        by_package[package(leaf_file)] += count
        for key in {k for k, _ in frames}:
            inclusive[key] += count
        ours = [k for k, file in frames if file.startswith(PROJECT) and not file.startswith(ENTRY)]
        for key in set(ours):
            project_inclusive[key] += count
        charged[ours[-1] if ours else f"(no gateway frame) {package(leaf_file)}"] += count

    def table(title: str, counter: Counter[str], n: int) -> list[str]:
        """The top `n` (entries on every stack, such as the process's main, left out)."""
        ms = cpu_ms_per_run is not None
        lines = [f"### {title}", ""]
        lines += (
            ["| share | ms/run | samples | what |", "|---:|---:|---:|---|"]
            if ms
            else [
                "| share | samples | what |",
                "|---:|---:|---|",
            ]
        )
        entries = [(k, c) for k, c in counter.most_common() if c < 0.99 * total][:n]
        for k, c in entries:
            per_run = f" {c / total * (cpu_ms_per_run or 0):.3f} |" if ms else ""
            lines.append(f"| {c / total:.1%} |{per_run} {c} | `{k}` |")
        return [*lines, ""]

    return "\n".join(
        [
            f"{total} samples of gateway CPU; {polling} more in the event loop's poll or idle worker threads, left out",
            "",
            *table("By stage of the run path", stages, top),
            *table("Self time by package (leaf frame's file)", by_package, top),
            *table("Self time by function", self_time, top),
            *table("Charged to the innermost gateway function (the library work it called included)", charged, top),
            *table("Inclusive time, gateway code (app/, services/, routers/)", project_inclusive, top),
            *table("Inclusive time, every function", inclusive, top),
        ]
    )


def find_py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return spy


async def profile(args: argparse.Namespace, spy: str) -> str:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-profile-")))
        if args.chat:
            config = write_mcp_config(directory, servers=[])
            upstream = await stack.enter_async_context(
                mock_lmstudio() if args.upstream == "mock" else stdlib_upstream()
            )
            bridge = await stack.enter_async_context(
                gateway(upstream.base_url, config, BRIDGE_LOG_LEVEL=args.log_level)
            )
            client = await stack.enter_async_context(http_client())
            body = dict(CHAT_BODY, model=stdlib_fake.MODEL) if args.upstream == "stdlib" else CHAT_BODY
            run = post_json(client, bridge.url(CHAT_PATH), body)
            await run()
            what = f"gateway on {args.upstream}, `POST {CHAT_PATH}`"
        elif args.tool:
            config = write_mcp_config(directory, [args.tool])
            bridge = await stack.enter_async_context(
                gateway(nothing_listening(), config, BRIDGE_LOG_LEVEL=args.log_level)
            )
            client = await stack.enter_async_context(http_client())
            path = f"/v1/mcp/servers/{args.tool}/tools/echo"
            run = post_json(client, bridge.url(path), ECHO_ARGUMENTS[args.tool])
            if (await run())["is_error"]:
                raise RuntimeError(f"{path} answered a tool error")
            what = f"gateway, `POST {path}`"
        else:
            bridge, run, what = await _run_path(stack, directory, args)
        for _ in range(WARMUP):
            await run()
        raw_path = directory / "profile.raw"
        command = [spy, "record", "--pid", str(bridge.process.pid), "--rate", str(args.rate)]
        command += ["--duration", str(args.seconds), "--format", "raw", "-o", str(raw_path)]
        command += ["--native"] if args.native else []
        command += ["--nonblocking"] if args.nonblocking else []
        spying = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(1.0)  # py-spy attaches
        runs, cpu, start = 0, bridge.cpu_s(), time.perf_counter()
        while spying.returncode is None and time.perf_counter() - start < args.seconds - 1.5:
            await run()
            runs += 1
        cpu, wall = bridge.cpu_s() - cpu, time.perf_counter() - start
        _, err = await spying.communicate()
        if spying.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed ({spying.returncode}): {err.decode(errors='replace')}")
        raw = raw_path.read_text()
        if args.out:
            Path(args.out).with_suffix(".raw").write_text(raw)
        unit = "call" if args.tool or args.chat else "run"
        head = (
            f"## {what}, BRIDGE_LOG_LEVEL={args.log_level}: {runs} sequential {unit}s in "
            f"{wall:.1f} s while sampled at {args.rate} Hz; gateway CPU {cpu / max(runs, 1) * 1000:.2f} ms/{unit} "
            "(sampling included)\n"
        )
        return head + "\n" + analyse(raw, args.top, cpu / max(runs, 1) * 1000)


async def _run_path(
    stack: contextlib.AsyncExitStack, directory: Path, args: argparse.Namespace
) -> tuple[Server, Call, str]:
    """The run benchmark's set-up: an upstream, the real time server, a gateway; a checked run call."""
    config = write_mcp_config(directory, [SERVER])
    if args.upstream == "mock":
        upstream = await stack.enter_async_context(mock_lmstudio())
        task = f"{QUESTION} {script(calls=[[TIME_CALL]])}"
    else:
        upstream = await stack.enter_async_context(stdlib_upstream())
        task = QUESTION
    bridge = await stack.enter_async_context(gateway(upstream.base_url, config, BRIDGE_LOG_LEVEL=args.log_level))
    client = await stack.enter_async_context(http_client())
    run = post_json(client, bridge.url("/v1/autonomous"), {"task": task, "mcp_servers": [SERVER]})
    result = await run()
    if result["status"] != "completed" or len(result["steps"]) != 1:
        raise RuntimeError(f"unexpected run result: {result!r}")
    model = stdlib_fake.MODEL if args.upstream == "stdlib" else "qwen/qwen3-4b"
    return bridge, run, f"gateway on {args.upstream} ({model}), `POST /v1/autonomous`"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_run", description=__doc__)
    parser.add_argument("--upstream", choices=["stdlib", "mock"], default="stdlib")
    parser.add_argument("--log-level", choices=["INFO", "WARNING"], default="INFO")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (uvloop, aiohttp)")
    parser.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking: never pause the gateway")
    parser.add_argument(
        "--tool", choices=sorted(ECHO_ARGUMENTS), help="profile REST calls of this server's echo tool instead of runs"
    )
    parser.add_argument("--chat", action="store_true", help="profile pass-through chats instead of runs")
    parser.add_argument("--out", help="write the report here (and the raw stacks beside it, .raw)")
    args = parser.parse_args()
    report = asyncio.run(profile(args, find_py_spy()))
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
