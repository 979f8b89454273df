"""Failure scenarios: a gateway per scenario, fault injection helpers, and the leak check.

Every scenario opens its gateway with `open_gateway(...)`. On leaving the block the gateway must
serve a normal request (checked automatically unless the scenario already called
`serves_normally()`), is shut down, and no child process of this test process may be left over
(MCP servers are children of the gateway, which runs in this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import app_client, make_settings, served
from tests.helpers import REPO, assert_problem, call, eventually, mcp_servers_json, read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, log_file, log_tail, spawn_python, wait_healthy

CHAT = "/v1/chat/completions"
PROBLEM_JSON = "application/problem+json"
CLIENT_TIMEOUT_S = 30.0
LEAK_WAIT_S = 10.0
FAULT_TOOL_TIMEOUT_S = 0.5  # the per-server "timeout" of the `fault_timeout` entry in mcp.json

Child = tuple[int, float]  # (pid, create_time): a pid alone may be reused


# --- faults of the mock ------------------------------------------------------------------------


def chat_fault(kind: str, **params: Any) -> dict[str, Any]:
    """A fault for the next chat completion request only (model-list requests pass it by)."""
    return {"kind": kind, "path": CHAT, **params}


PASS = chat_fault("delay", ms=0)  # a no-op fault: lets the next queued fault hit the request after


# --- assertions ---------------------------------------------------------------------------------


def assert_run(response: httpx.Response, status: str) -> dict[str, Any]:
    """The response is a run result with this run status; returns it."""
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["status"] == status, result
    return result


# --- child processes ----------------------------------------------------------------------------


def _identity(proc: psutil.Process) -> Child | None:
    try:
        return proc.pid, proc.create_time()
    except psutil.Error:
        return None


def child_processes(of: psutil.Process | None = None) -> set[Child]:
    """Every live or unreaped descendant of `of` (default: this test process)."""
    try:
        procs = (of or psutil.Process()).children(recursive=True)
    except psutil.Error:
        return set()
    return {ident for ident in map(_identity, procs) if ident is not None}


def alive(children: set[Child]) -> set[Child]:
    """Those of `children` that still exist (a zombie counts: nobody reaped it)."""
    out = set()
    for child in children:
        with contextlib.suppress(psutil.Error):
            if _identity(psutil.Process(child[0])) == child:
                out.add(child)
    return out


def describe(children: set[Child]) -> str:
    out = []
    for pid, _ in children:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            out.append(f"{pid} {proc.status()} {' '.join(proc.cmdline())[:160]}")
    return "; ".join(out)


async def assert_no_new_children(before: set[Child]) -> None:
    """No process started since `before` is still around (given a few seconds to be reaped)."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: not child_processes() - before, LEAK_WAIT_S)
    leaked = child_processes() - before
    assert not leaked, f"leaked child processes: {describe(leaked)}"


# --- the mcp.json of the scenarios ----------------------------------------------------------------


def scenario_mcp_config() -> dict[str, Any]:
    """Fault-server entries only (fast to start): healthy, with a short timeout, missing, crashing."""
    fault = mcp_servers_json(str(REPO))["mcpServers"]["fault"]
    return {
        "mcpServers": {
            "fault": fault,
            "fault_timeout": {**fault, "timeout": FAULT_TOOL_TIMEOUT_S},
            "ghost": {"command": "/nonexistent/lmstudio-bridge-ghost-server"},
            "crashy": {**fault, "args": [*fault["args"], "--crash-on-start"]},
        }
    }


@pytest.fixture(scope="session")
def scenario_mcp_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenarios") / "mcp.json"
    path.write_text(json.dumps(scenario_mcp_config()))
    return path


# --- an in-process gateway per scenario ------------------------------------------------------------


async def post_run(client: httpx.AsyncClient, task: str, **body: Any) -> httpx.Response:
    """POST /v1/autonomous; without `mcp_servers`, a run with no MCP server."""
    body.setdefault("mcp_servers", [])
    return await client.post("/v1/autonomous", json={"task": task, **body})


async def post_stream_run(client: httpx.AsyncClient, task: str, **body: Any) -> tuple[str, Any, list[str]]:
    """A streamed run: (its one terminal event, that event's data, the names of all events before it)."""
    body.setdefault("mcp_servers", [])
    payload = {"task": task, "stream": True, **body}
    async with client.stream("POST", "/v1/autonomous", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(response)
    names = [name for name, _ in events]
    terminal = [name for name in names if name in ("run.completed", "run.failed")]
    assert len(terminal) == 1 and names[-1] == terminal[0], names
    return names[-1], events[-1][1], names[:-1]


class Runs:
    """Shortcuts on a gateway's `client`."""

    client: httpx.AsyncClient

    async def run(self, task: str, **body: Any) -> httpx.Response:
        return await post_run(self.client, task, **body)

    async def stream_run(self, task: str, **body: Any) -> tuple[str, Any, list[str]]:
        return await post_stream_run(self.client, task, **body)

    async def run_tool_call(self, name: str, arguments: Any, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A completed run in which the model calls `name` (`<server>__<tool>`) once: the result and its step."""
        task = f"call {name} " + script(calls=[[call(name, arguments)]])
        result = assert_run(await self.run(task, mcp_servers=[name.split("__")[0]], **body), "completed")
        [step] = result["steps"]
        return result, step

    async def tool(self, server: str, tool: str, **arguments: Any) -> httpx.Response:
        return await self.client.post(f"/v1/mcp/servers/{server}/tools/{tool}", json=arguments)


@dataclass
class Gateway(Runs):
    """A started gateway, the mock LM Studio behind it, and shortcuts for the scenarios."""

    client: httpx.AsyncClient
    mock: MockLMStudio
    mcp: bool
    checked: bool = False

    async def breaker(self) -> str:
        body = (await self.client.get("/readyz")).json()
        return str(body["lmstudio"]["breaker"])

    async def fault_pid(self, server: str = "fault") -> int:
        response = await self.tool(server, "pid")
        assert response.status_code == 200, response.text
        return int(response.json()["content"][0]["text"])

    async def fault_running(self, server: str = "fault") -> int:
        """How many `slow` or `hang` calls the fault server is in the middle of."""
        response = await self.tool(server, "running")
        assert response.status_code == 200, response.text
        return int(response.json()["content"][0]["text"])

    async def serves_normally(self) -> None:
        """GET /v1/models answers, and a short scripted run (with a tool when MCP is configured) completes."""
        models = await self.client.get("/v1/models")
        assert models.status_code == 200, models.text
        if self.mcp:
            result, step = await self.run_tool_call("fault__echo", {"text": "still here"})
            assert not step["is_error"], step
            assert "still here" in result["output"]
        else:
            result = assert_run(await self.run("normal " + script(answer="fine")), "completed")
            assert result["output"] == "fine"
        self.checked = True


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@contextlib.asynccontextmanager
async def gateway(
    mock: MockLMStudio, mcp_config: Path | None, *, wire: bool, **overrides: Any
) -> AsyncIterator[Gateway]:
    before = child_processes()
    values: dict[str, Any] = {"lmstudio_base_url": mock.base_url, "mcp_config": mcp_config and str(mcp_config)}
    values.update(overrides)
    connect = served if wire else app_client
    async with connect(make_settings(**values), timeout=CLIENT_TIMEOUT_S) as client:
        gw = Gateway(client, mock, mcp=mcp_config is not None)
        yield gw
        if not gw.checked:
            await gw.serves_normally()
    await assert_no_new_children(before)


@pytest.fixture
def open_gateway(mock: MockLMStudio, scenario_mcp_json: Path) -> GatewayFactory:
    """`async with open_gateway(mcp=True, wire=False, **settings) as gw:` (`wire`: a real uvicorn socket)."""

    def factory(*, mcp: bool = False, wire: bool = False, **overrides: Any) -> AbstractAsyncContextManager[Gateway]:
        return gateway(mock, scenario_mcp_json if mcp else None, wire=wire, **overrides)

    return factory


async def open_breaker(gw: Gateway, failures: int) -> None:
    """Fail `failures` runs with LM Studio 500s (each counts once: retries are off in these scenarios)."""
    await gw.mock.faults(*[chat_fault("status", status=500)] * failures)
    for _ in range(failures):
        assert_problem(await gw.run("fail"), 502, "upstream_error")
    assert await gw.breaker() == "open"


async def wait_half_open(gw: Gateway, within_s: float) -> None:
    async def half_open() -> bool:
        return await gw.breaker() == "half_open"

    await eventually(half_open, within_s, "breaker half-open")


# --- the gateway as a real `python -m app.cli serve` process --------------------------------------

SETTING_PREFIXES = ("BRIDGE_", "LMSTUDIO_", "MCP_", "DEFAULT_MODEL", "MODEL_CACHE")


@dataclass
class GatewayProcess(Runs):
    process: asyncio.subprocess.Process
    port: int
    client: httpx.AsyncClient
    log_path: str
    descendants: set[Child] = field(default_factory=set)  # every descendant seen while it ran

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def note_children(self) -> set[Child]:
        """Record (and return) the gateway's descendants as they are now."""
        now = child_processes(self.ps)
        self.descendants |= now
        return now

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    async def sigterm(self, within_s: float = 60.0) -> int:
        """SIGTERM, then the exit code (the process must stop within `within_s`)."""
        self.note_children()
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), within_s)


@contextlib.asynccontextmanager
async def gateway_process(
    *envs: Mapping[str, str], port: int | None = None, **env: str
) -> AsyncIterator[GatewayProcess]:
    """Start the gateway with the variables of `envs` and `env` (names as operators set them), wait for
    /healthz, and on exit make sure it is gone and left neither children of ours nor orphans of its own."""
    env = {k: v for variables in (*envs, env) for k, v in variables.items()}
    port = port or free_port()
    before = child_processes()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    log = log_file("bridge-")
    away_from_dotenv = Path(log.name).parent  # not the repository, where a developer's .env may be
    gateway_env = {**clean, "BRIDGE_LOG_LEVEL": "WARNING", **env}
    process = await spawn_python(
        "app.cli", "serve", "--port", str(port), log=log, env=gateway_env, cwd=away_from_dotenv
    )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=CLIENT_TIMEOUT_S)
    gp = GatewayProcess(process, port, client, log.name)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", process, 30, gp.log_tail)
        yield gp
    finally:
        await client.aclose()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        log.close()
    orphans = alive(gp.descendants)
    assert not orphans, f"the gateway left processes behind: {describe(orphans)}"
    await assert_no_new_children(before)
    os.unlink(log.name)


# --- gateway processes on a run store of each kind (test_restarts.py, test_replicas.py) ----------------


def process_env(mock: MockLMStudio, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a gateway process on `mock`, the real time server and `database_url`."""
    mcp_json = tmp_path / "mcp.json"
    time_server = mcp_servers_json(str(REPO))["mcpServers"]["time"]
    mcp_json.write_text(json.dumps({"mcpServers": {"time": time_server}}))
    return {
        "LMSTUDIO_BASE_URL": mock.base_url,
        "MCP_CONFIG": str(mcp_json),
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_SHUTDOWN_GRACE_S": "1",
        "BRIDGE_REPEAT_CALL_LIMIT": "100",  # the same call over and over must not end the run as a loop
        **extra,
    }
