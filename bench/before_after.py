"""This checkout's gateway against another checkout's (`--base DIR`, e.g. a `git worktree` of an older commit), in
one process, the contenders interleaved: the pass-through chat (one message, and 200 messages of 2 KB), the
REST tool call (`fault.echo`, `everything.echo`), an autonomous run (one call of the real time server, the run
benchmark's) and a streamed run of about 100 events (4 rounds of 12 `fault.echo` calls, read to its end).
Same-run figures only: the machine may be shared.

    git worktree add /tmp/base <commit>
    .venv/bin/python -m bench.before_after --base /tmp/base [--log-level INFO] [--only run sse] [-n 3000 --blocks 100]
    .venv/bin/python -m bench.before_after --base /tmp/one --after /tmp/other   # two other checkouts

Both gateways run on this venv; the base one with ``python -P`` and PYTHONPATH=<base>, so its own packages are
imported (not this checkout's). Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BLOCKS,
    Call,
    Contender,
    HTTPFailure,
    Server,
    compare,
    floor,
    http_client,
    mock_lmstudio,
    post_json,
    serve_command,
    warm_up,
    write_mcp_config,
)
from bench.run_upstreams import QUESTION, SERVER
from tests.helpers import TIME_CALL, call, script

N = 1000
WARMUP = 100
CHAT = "/v1/chat/completions"
RUN_PATH = "/v1/autonomous"
ONE = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Say hi."}]}
MANY = {
    "model": "qwen/qwen3-4b",
    "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "x" * 2000} for i in range(199)]
    + [{"role": "user", "content": "Say hi."}],
}
TOOLS = [("fault", "echo", {"text": "hi"}), ("everything", "echo", {"message": "hi"})]
RUN = {"task": f"{QUESTION} {script(calls=[[TIME_CALL]])}", "mcp_servers": [SERVER]}
SSE_ROUNDS, SSE_CALLS = 4, 12  # tool_call.started and .completed per call, and the run's own events: about 100
SSE_RUN = {
    "task": "Echo. "
    + script(
        calls=[[call("fault__echo", {"text": f"hi {r}.{i}"}) for i in range(SSE_CALLS)] for r in range(SSE_ROUNDS)]
    ),
    "mcp_servers": ["fault"],
    "stream": True,
}


def read_stream(client: httpx.AsyncClient, url: str, body: Any) -> Call:
    """A call that POSTs `body` and reads the Server-Sent Events to the end; returns how many events came."""

    async def call() -> int:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise HTTPFailure(url, response)
            events = 0
            async for line in response.aiter_lines():
                events += line.startswith("event:")
            return events

    return call


@contextlib.asynccontextmanager
async def _gateway(
    name: str, lmstudio_url: str, config: Path, code: Path | None, log_level: str
) -> AsyncIterator[Server]:
    """``app.cli serve`` of this checkout (`code` None) or of the checkout at `code`."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-store-") as store:
        env = {
            "LMSTUDIO_BASE_URL": lmstudio_url,
            "MCP_CONFIG": str(config),
            "BRIDGE_LOG_LEVEL": log_level,
            "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{store}/runs.db",
        }
        command = [sys.executable, "-m", "app.cli", "serve"]
        if code is not None:
            command = [sys.executable, "-P", "-m", "app.cli", "serve"]
            env["PYTHONPATH"] = str(code)
        async with serve_command(name, command, health="/healthz", env=env) as server:
            yield server


def _rows(client: httpx.AsyncClient) -> dict[str, tuple[str, Callable[[Server], Call]]]:
    """What is compared, by key (`--only`): a label and how to make the call against one gateway."""
    rows: dict[str, tuple[str, Callable[[Server], Call]]] = {
        "chat": ("pass-through chat, 1 message", lambda s: post_json(client, s.url(CHAT), ONE)),
        "chat200": ("pass-through chat, 200 messages of 2 KB", lambda s: post_json(client, s.url(CHAT), MANY)),
    }
    for server, tool, args in TOOLS:
        path = f"/v1/mcp/servers/{server}/tools/{tool}"
        rows[server] = (f"REST tool call {server}.{tool}", partial(_post, client, path, args))
    rows["run"] = ("autonomous run, 1 time call", lambda s: post_json(client, s.url(RUN_PATH), RUN))
    rows["sse"] = (
        f"streamed run, {SSE_ROUNDS} rounds of {SSE_CALLS} fault.echo calls (~100 events)",
        lambda s: read_stream(client, s.url(RUN_PATH), SSE_RUN),
    )
    return rows


def _post(client: httpx.AsyncClient, path: str, body: Any, server: Server) -> Call:
    return post_json(client, server.url(path), body)


ROWS = ["chat", "chat200", *(server for server, *_ in TOOLS), "run", "sse"]


async def run(
    base: Path, after_code: Path | None, n: int, blocks: int, log_level: str, only: list[str]
) -> list[tuple[str, str, str, str, str]]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-before-after-")))
        config = write_mcp_config(directory, [*(server for server, *_ in TOOLS), SERVER])
        mock = await stack.enter_async_context(mock_lmstudio())
        before = await stack.enter_async_context(_gateway("before", mock.base_url, config, base, log_level))
        after = await stack.enter_async_context(_gateway("after", mock.base_url, config, after_code, log_level))
        ground = await stack.enter_async_context(floor())
        client = await stack.enter_async_context(http_client())

        rows = _rows(client)
        pairs = [
            (
                label,
                Contender(f"before: {label}", make(before), [before]),
                Contender(f"after: {label}", make(after), [after]),
            )
            for label, make in (rows[key] for key in only)
        ]
        floor_c = Contender("floor", post_json(client, ground.url("/"), ONE), [ground])
        direct = Contender("direct to the mock, 200 messages", post_json(client, mock.url(CHAT), MANY), [mock])
        contenders = [floor_c, direct, *(c for _, *two in pairs for c in two)]
        await warm_up(contenders, WARMUP)
        await compare(contenders, n, blocks)

        result = [
            (
                label,
                f"{old.p50:.2f} / {new.p50:.2f} ms",
                f"{old.cpu_ms(before):.2f} / {new.cpu_ms(after):.2f} ms",
                f"{new.cpu_ms(after) / old.cpu_ms(before):.2f}",
                f"{old.p99:.2f} / {new.p99:.2f} ms",
            )
            for label, old, new in pairs
        ]
        result.append(("floor (fixed JSON)", f"{floor_c.p50:.2f} ms", f"{floor_c.cpu_ms(ground):.2f} ms", "", ""))
        result.append(
            ("direct to the mock, 200 messages", f"{direct.p50:.2f} ms", f"{direct.cpu_ms(mock):.2f} ms", "", "")
        )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--after", type=Path, help="compare with this checkout instead of this one")
    parser.add_argument("-n", type=int, default=N, help=f"measured calls per contender (default {N})")
    parser.add_argument("--blocks", type=int, default=BLOCKS, help=f"interleaved blocks (default {BLOCKS})")
    parser.add_argument("--log-level", default="WARNING", help="both gateways' BRIDGE_LOG_LEVEL (default WARNING)")
    parser.add_argument("--only", nargs="+", choices=ROWS, default=ROWS, help="these rows only")
    options = parser.parse_args()
    after = options.after.resolve() if options.after else None
    rows = asyncio.run(run(options.base.resolve(), after, options.n, options.blocks, options.log_level, options.only))
    print(
        "| what | p50 before / after | gateway CPU per call before / after | CPU after / before | p99 before / after |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
