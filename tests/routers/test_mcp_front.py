"""The gateway as an MCP server: the SDK client against `/mcp` (real uvicorn) and `lmstudio-bridge mcp` (stdio)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mtypes
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from services.mcp import RECURSION_SKIPPED
from tests.conftest import make_settings, served, store_url
from tests.helpers import REPO, TIME_CALL, mcp_servers_json, script
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.routers.front_door import TIME_TASK

pytestmark = pytest.mark.timeout(120)

TOOLS = {
    "autonomous_with_mcp",
    "autonomous_with_multiple_mcps",
    "autonomous_discover_and_execute",
    "autonomous_pipeline",
    "start_task",
    "get_task_result",
    "list_available_mcps",
    "list_models",
    "health_check",
}
PORT = 18_765  # the port the gateway believes it serves on (the recursion guard compares against it)


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    """time, plus three entries that are the bridge itself (stdio x2, HTTP): all must be skipped."""
    servers = {
        "time": mcp_servers_json(str(files))["mcpServers"]["time"],
        "bridge-cli": {"command": "/opt/venv/bin/lmstudio-bridge", "args": ["mcp"]},
        "bridge-module": {"command": sys.executable, "args": ["-m", "app.cli", "mcp"], "cwd": str(REPO)},
        "bridge-http": {"url": f"http://localhost:{PORT}/mcp"},
    }
    path = files.parent / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"port": PORT}


class Progress:
    """Collects progress notifications of one call."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, message))


async def call(session: ClientSession, tool: str, **arguments: Any) -> tuple[mtypes.CallToolResult, Progress]:
    progress = Progress()
    result = await session.call_tool(tool, arguments, progress_callback=progress)
    return result, progress


def text_of(result: mtypes.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, mtypes.TextContent))


def check_time_run(result: mtypes.CallToolResult, progress: Progress) -> None:
    """A completed run with one real time tool call: text, structured run record, progress."""
    assert not result.is_error, text_of(result)
    record = result.structured_content
    assert record is not None and record["status"] == "completed"
    assert text_of(result) == record["output"] and "UTC" in record["output"]
    assert record["mcp_servers"] == ["time"] and record["model"] == "qwen/qwen3-4b"
    [step] = record["steps"]
    assert (step["server"], step["tool"], step["is_error"]) == ("time", "get_current_time", False)
    assert record["run_id"].startswith("run_") and record["rounds"] == 1
    messages = [m or "" for _, m in progress.updates]
    assert [p for p, _ in progress.updates] == list(range(1, len(progress.updates) + 1))
    assert messages[0].startswith("run started: model qwen/qwen3-4b")
    assert "round 1: calling time__get_current_time" in messages
    assert any(m.startswith("round 1: time__get_current_time done") for m in messages)


async def test_tools_have_the_original_names_and_parameters(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    schema = tools["autonomous_with_mcp"].input_schema
    assert set(schema["properties"]) == {"mcp_name", "task", "model", "max_rounds", "max_tokens"}
    assert sorted(schema["required"]) == ["mcp_name", "task"]
    rounds = schema["properties"]["max_rounds"]  # REST's bounds; unset takes BRIDGE_MAX_ROUNDS_DEFAULT
    assert rounds["default"] is None and "BRIDGE_MAX_ROUNDS_DEFAULT" in rounds["description"]
    assert set(tools["autonomous_with_multiple_mcps"].input_schema["required"]) == {"mcp_names", "task"}
    assert tools["autonomous_discover_and_execute"].input_schema["required"] == ["task"]
    assert tools["list_models"].input_schema.get("required", []) == []


async def test_run_over_streamable_http(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        check_time_run(*await call(session, "autonomous_with_mcp", mcp_name="time", task=TIME_TASK))
        check_time_run(*await call(session, "autonomous_with_multiple_mcps", mcp_names=["time"], task=TIME_TASK))
        # every enabled server: the bridge's own entries are skipped, so only time is left
        check_time_run(*await call(session, "autonomous_discover_and_execute", task=TIME_TASK))


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"mcp_name": "time", "task": "x", "model": "nope/nope"}, "model_not_found"),
        ({"mcp_name": "nope", "task": "x"}, "mcp_server_not_found"),
        ({"mcp_name": "bridge-http", "task": "x"}, "mcp_server_unavailable"),
        ({"mcp_name": "time", "task": "x", "max_rounds": 0}, "validation_error"),
        ({"mcp_name": "time", "task": "x", "max_rounds": 101}, "validation_error"),
        ({"mcp_name": "time", "task": "x", "max_tokens": -5}, "validation_error"),
        ({"mcp_name": "time", "task": "x", "max_tokens": 1_000_001}, "validation_error"),
        ({"mcp_name": "time", "task": "x" * 20_001}, "validation_error"),
        ({"mcp_name": "time", "task": ""}, "validation_error"),
    ],
)
async def test_failures_carry_the_rest_code(live: httpx.AsyncClient, arguments: dict[str, Any], code: str) -> None:
    async with http_session(live) as session:
        result, _ = await call(session, "autonomous_with_mcp", **arguments)
    assert result.is_error
    assert text_of(result).startswith(f"{code}: ")
    problem = result.structured_content
    assert problem is not None and problem["code"] == code
    rest = await live.post("/v1/autonomous/with-mcp", json=arguments)
    assert rest.json()["code"] == code


async def test_lists_and_health(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        servers, _ = await call(session, "list_available_mcps")
        models, _ = await call(session, "list_models")
        health, _ = await call(session, "health_check")
    assert not (servers.is_error or models.is_error or health.is_error)
    assert servers.structured_content == (await live.get("/v1/mcp/servers")).json()
    assert json.loads(text_of(servers)) == servers.structured_content
    listing = models.structured_content
    assert listing == (await live.get("/v1/models")).json()  # one status service behind both
    assert [m["id"] for m in listing["data"] if m["default"]] == ["qwen/qwen3-4b"]
    status = health.structured_content
    assert status is not None and status["status"] == "ready" and status["lmstudio"]["ok"] is True
    states = {s["name"]: s["status"] for s in status["mcp"]["servers"]}
    assert states["time"] in {"idle", "ready"} and states["bridge-cli"] == "disabled"


async def test_mcp_is_served_without_a_redirect(live: httpx.AsyncClient) -> None:
    response = await live.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code not in {301, 302, 307, 308}
    assert response.status_code < 500
    # bound to loopback: the SDK's DNS-rebinding protection refuses foreign Host headers
    foreign = await live.post("/mcp", json={}, headers={"Host": "evil.example"})
    assert foreign.status_code == 421


async def test_api_keys_apply_to_mcp(mock: MockLMStudio, mcp_json: Path) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), api_keys="k1")
    async with served(settings) as gateway:
        refused = await gateway.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        async with http_session(gateway, Authorization="Bearer k1") as session:
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS


async def test_recursion_guard_is_visible(live: httpx.AsyncClient) -> None:
    servers = {s["name"]: s for s in (await live.get("/v1/mcp/servers")).json()["data"]}
    for name in ("bridge-cli", "bridge-module", "bridge-http"):
        assert servers[name]["status"] == "disabled"
        assert servers[name]["last_error"] == RECURSION_SKIPPED
    assert servers["time"]["status"] != "disabled" and servers["time"]["last_error"] is None


async def test_run_over_stdio(mock: MockLMStudio, mcp_json: Path) -> None:
    """`python -m app.cli mcp` (what the `lmstudio-bridge mcp` script runs): stdout carries JSON-RPC only."""
    env = {"LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": str(mcp_json), "BRIDGE_LOG_LEVEL": "DEBUG"}
    env["BRIDGE_DATABASE_URL"] = store_url()  # not ./data/ of the repository
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"], env=env, cwd=str(REPO))
    stray: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # a stdout line that is not JSON-RPC
            stray.append(message)

    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        check_time_run(*await call(session, "autonomous_with_mcp", mcp_name="time", task=TIME_TASK))
        failed, _ = await call(session, "autonomous_with_mcp", mcp_name="time", task="x", model="nope")
        assert failed.is_error and failed.structured_content and failed.structured_content["code"] == "model_not_found"
        servers, _ = await call(session, "list_available_mcps")
    assert servers.structured_content is not None
    statuses = {s["name"]: (s["status"], s["last_error"]) for s in servers.structured_content["data"]}
    assert statuses["bridge-module"] == ("disabled", RECURSION_SKIPPED)
    assert stray == []


async def test_readiness_is_the_same_on_rest_and_mcp_with_an_open_breaker(mock: MockLMStudio, mcp_json: Path) -> None:
    settings = make_settings(
        lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), breaker_failures=1, lmstudio_retries=0
    )
    async with served(settings) as gateway:
        await mock.faults({"kind": "status", "status": 503, "path": "/v1/chat/completions"})
        failed = await gateway.post("/v1/autonomous", json={"task": "x", "mcp_servers": ["time"]})
        assert (failed.status_code, failed.json()["code"]) == (502, "upstream_error"), failed.text
        rest = await gateway.get("/readyz")
        async with http_session(gateway) as session:
            health, _ = await call(session, "health_check")
    assert rest.status_code == 503
    assert rest.json()["lmstudio"]["breaker"] == "open" and rest.json()["lmstudio"]["ok"] is True
    assert health.structured_content is not None
    assert health.structured_content["status"] == rest.json()["status"] == "not_ready"
    assert health.structured_content["lmstudio"] == rest.json()["lmstudio"]


async def test_honest_endings_reach_mcp_clients(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        looped, _ = await call(
            session, "autonomous_with_mcp", mcp_name="time", task="Loop " + script(forever=TIME_CALL)
        )
        long_answer = script(answer="It is noon. " * 50)
        cut, _ = await call(session, "autonomous_with_mcp", mcp_name="time", task="Cut " + long_answer, max_tokens=8)
    assert looped.structured_content is not None and looped.structured_content["status"] == "loop"
    assert not looped.is_error and text_of(looped)
    assert cut.structured_content is not None and cut.structured_content["status"] == "length"
    assert text_of(cut).startswith("It is noon.") and len(text_of(cut)) <= 32
