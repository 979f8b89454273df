"""Helpers shared by the tests, the benchmarks and the demo: the repository root, the real MCP servers'
mcp.json, the mock LM Studio's script markup, Server-Sent Events and polling for a condition.

No pytest and no gateway import here: `bench/` and `scripts/` import this module too.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
NODE_SERVERS = REPO / "node_modules" / "@modelcontextprotocol"
POLL_S = 0.05


# --- the mock LM Studio's script (tests/mock_lmstudio/__init__.py documents the keys) -----------------


def script(**spec: Any) -> str:
    """The inline `[[mock {...}]]` markup the mock LM Studio follows: calls, forever, answer, delay_ms, fault."""
    return f"[[mock {json.dumps(spec)}]]"


def call(name: str, arguments: Any) -> dict[str, Any]:
    """One scripted tool call: `name` as the model sees it (`<server>__<tool>`), arguments as an object or
    a raw string (sent verbatim, malformed JSON on purpose)."""
    return {"name": name, "arguments": arguments}


TIME_CALL = call("time__get_current_time", {"timezone": "UTC"})  # the real time server's tool, with valid arguments


# --- real MCP servers ------------------------------------------------------------------------------


def mcp_servers_json(files_dir: str) -> dict[str, Any]:
    """An mcp.json (as a dict) with real servers: time, filesystem, memory, everything, and our fault server."""

    def node(package: str, *args: str) -> dict[str, Any]:
        return {"command": "node", "args": [str(NODE_SERVERS / f"server-{package}" / "dist" / "index.js"), *args]}

    return {
        "mcpServers": {
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
            "filesystem": node("filesystem", files_dir),
            "memory": {**node("memory"), "env": {"MEMORY_FILE_PATH": f"{files_dir}/memory.jsonl"}},
            "everything": node("everything"),
            "fault": {"command": sys.executable, "args": ["-m", "tests.mcp_servers.fault_server"], "cwd": str(REPO)},
        }
    }


def write_mcp_json(path: Path, files_dir: str, **entries: dict[str, Any]) -> Path:
    """Write `mcp_servers_json(files_dir)` to `path`; each of `entries` is a new server, or keys merged
    into the entry of that name (`time={"env": {...}}`)."""
    servers = mcp_servers_json(files_dir)["mcpServers"]
    for name, entry in entries.items():
        servers[name] = {**servers.get(name, {}), **entry}
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


# --- responses -------------------------------------------------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of a Server-Sent Events response, as they arrive."""
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            yield event, json.loads(line[6:])
            event = None


async def read_sse(response: httpx.Response) -> list[tuple[str, Any]]:
    """Every (event, data) of a Server-Sent Events response."""
    return [event async for event in sse_events(response)]


# --- waiting -----------------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Any], within_s: float = 10.0, what: str = "condition", every_s: float = POLL_S
) -> Any:
    """Poll `check` (sync or async) every `every_s` until it returns something truthy, and return that;
    AssertionError naming `what` after `within_s`. An exception raised by `check` ends the wait at once."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within_s:g} s")
        await asyncio.sleep(every_s)
