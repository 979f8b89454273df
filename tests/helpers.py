"""Helpers shared by the tests, the benchmarks and the demo: the repository root, the real MCP servers'
mcp.json, the mock LM Studio's script markup, Server-Sent Events and polling for a condition.

No pytest and no gateway import here: `bench/` and `scripts/` import this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.agent import FINISHED_STATUSES

if TYPE_CHECKING:
    from mcp import ClientSession

REPO = Path(__file__).resolve().parents[1]
NODE_SERVERS = REPO / "node_modules" / "@modelcontextprotocol"
POLL_S = 0.05


# --- the mock LM Studio's script (tests/mock_lmstudio/__init__.py documents the keys) -----------------


def script(**spec: Any) -> str:
    """The inline `[[mock {...}]]` markup the mock LM Studio follows: calls, forever, answer, final (the answer
    after the calls instead of an echo of their outputs), delay_ms, hold, fault."""
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


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a problem document with exactly this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status, body
    return body


# --- stored runs (/v1/runs) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One SSE frame of a stored run's event stream, with its `id:` (`read_sse` leaves ids out)."""

    id: int
    event: str
    data: Any


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The SSE frames of a stored run's event stream with their `id:`."""
    assert response.status_code == 200, response.text if not response.is_stream_consumed else response.status_code
    assert response.headers["content-type"].startswith("text/event-stream")
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue  # keep-alive comment
        if not line:
            if fields:
                yield Frame(int(fields["id"]), fields["event"], json.loads(fields["data"]))
                fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    assert not fields, f"a frame without its closing blank line: {fields}"


async def events_of(client: httpx.AsyncClient, run_id: str, **kwargs: Any) -> list[Frame]:
    async with client.stream("GET", f"/v1/runs/{run_id}/events", **kwargs) as response:
        return [frame async for frame in frames(response)]


async def start_run(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any) -> str:
    """POST /v1/runs: the accepted run's id (202, `Location` naming it)."""
    response = await client.post("/v1/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    run_id = str(response.json()["run_id"])
    assert response.headers["location"] == f"/v1/runs/{run_id}"
    return run_id


async def record(client: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(f"/v1/runs/{run_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def finished(
    client: httpx.AsyncClient, run_id: str, within_s: float = 20.0, *, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The run's record once it has ended."""

    async def ended() -> dict[str, Any] | None:
        rec = await record(client, run_id, headers)
        return rec if rec["status"] in FINISHED_STATUSES else None

    return dict(await eventually(ended, within_s, f"run {run_id} ended"))


# --- the MCP front door ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mcp_http_session(
    gateway: httpx.AsyncClient, *, elicitation_callback: Any = None, message_handler: Any = None, **headers: str
) -> AsyncIterator[ClientSession]:
    """An MCP client session on the gateway's `/mcp` (streamable HTTP), with these HTTP headers (and, given an
    `elicitation_callback`, declaring elicitation; `message_handler` gets the server's notifications). The SDK
    is imported here: tests/app/test_lazy_imports.py imports this module and checks the gateway loads it lazily."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(timeout=60, headers=headers) as http,
        streamable_http_client(str(gateway.base_url.join("/mcp")), http_client=http) as (read, write),
        ClientSession(
            read, write, elicitation_callback=elicitation_callback, message_handler=message_handler
        ) as session,
    ):
        await session.initialize()
        yield session
