"""An MCP server (stdio) that records every tool execution, for the replica chaos test (tests/scenarios/chaos.py).

`mark(tag, step)` and `gated_mark(tag, step)` (the one a person must approve) append one line
`<time.time()> <tag> <step> <pid>` to the file named by COUNTING_FILE (O_APPEND: lines of several servers do
not mix) before answering. Run: `python -m tests.mcp_servers.counting_server`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mcp.server.mcpserver import MCPServer

server: MCPServer[Any] = MCPServer("counting")


def _record(tag: str, step: int) -> str:
    line = f"{time.time():.6f} {tag} {step} {os.getpid()}\n".encode()
    fd = os.open(os.environ["COUNTING_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return f"marked {tag} {step}"


@server.tool()
def mark(tag: str, step: int) -> str:
    """Record one execution of step `step` of run `tag`."""
    return _record(tag, step)


@server.tool()
def gated_mark(tag: str, step: int) -> str:
    """The same, behind a person's approval (BRIDGE_APPROVAL_TOOLS)."""
    return _record(tag, step)


def executions(path: str) -> list[tuple[float, str, int, int]]:
    """The recorded executions: (time, tag, step, pid)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [(float(at), tag, int(step), int(pid)) for at, tag, step, pid in (line.split() for line in lines)]


if __name__ == "__main__":
    server.run("stdio")
