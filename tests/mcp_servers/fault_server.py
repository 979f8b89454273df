"""A small MCP server (stdio) with tools that misbehave on purpose, for the pool tests.

Run: `python -m tests.mcp_servers.fault_server [--crash-on-start]`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

server: MCPServer[Any] = MCPServer("fault")
_added = 0
_running = 0  # calls of `slow` and `hang` in progress


@contextmanager
def _counted() -> Iterator[None]:
    global _running
    _running += 1
    try:
        yield
    finally:
        _running -= 1


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer "slept"."""
    with _counted():
        await anyio.sleep(seconds)
    return "slept"


@server.tool()
async def progress(seconds: float, every: float, ctx: Context) -> str:
    """Work for `seconds`, reporting progress every `every` seconds, then answer "done"."""
    steps = max(round(seconds / every), 1)
    with _counted():
        for step in range(1, steps + 1):
            await anyio.sleep(every)
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return "done"


@server.tool()
async def hang() -> str:
    """Never answer."""
    with _counted():
        await anyio.sleep_forever()
    return "unreachable"


@server.tool()
def running() -> int:
    """How many calls of `slow` and `hang` are in progress (tests wait for their calls to arrive)."""
    return _running


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def crash() -> str:
    """Kill the server process in the middle of the call."""
    sys.stderr.write("fault server: crash tool called, exiting\n")
    sys.stderr.flush()
    os._exit(1)


@server.tool()
def huge(chars: int) -> str:
    """Return `chars` characters."""
    return "x" * chars


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def fail(message: str) -> str:
    """Fail with a tool error (is_error=True)."""
    raise ToolError(message)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def add_tool(ctx: Context) -> str:
    """Register a new tool `dynamic_<n>` and send notifications/tools/list_changed."""
    global _added
    _added += 1
    name = f"dynamic_{_added}"

    def dynamic() -> str:
        return name

    server.add_tool(dynamic, name=name, description="Added at runtime")
    await ctx.session.send_tool_list_changed()
    return name


@server.tool()
def get_meta(ctx: Context) -> dict[str, Any]:
    """The request's `_meta`, as the server received it."""
    return dict(ctx.request_context.meta or {})


@server.tool()
def broken_schema(x: str) -> str:
    """A tool whose advertised input schema is not a valid JSON schema."""
    return x


# MCPServer derives schemas from signatures; overwrite the advertised one with an invalid schema.
_broken = server._tool_manager.get_tool("broken_schema")
assert _broken is not None
_broken.parameters = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}


def main() -> None:
    if "--crash-on-start" in sys.argv:
        sys.stderr.write("fault server: crashing on start as asked\n")
        sys.stderr.flush()
        sys.exit(1)
    if "--slow-start" in sys.argv:
        time.sleep(30)
    server.run("stdio")


if __name__ == "__main__":
    main()
