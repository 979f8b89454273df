"""The MCP front door's background tasks: `start_task` and `get_task_result` with the SDK client against
`/mcp` (real uvicorn), beside the original tools."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mtypes
import pytest
from mcp import ClientSession

from tests.helpers import TIME_CALL, script
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.routers.front_door import TIME_TASK, time_only

pytestmark = pytest.mark.timeout(120)

ORIGINAL_TOOLS = {
    "autonomous_with_mcp",
    "autonomous_with_multiple_mcps",
    "autonomous_discover_and_execute",
    "list_available_mcps",
    "list_models",
    "health_check",
}
SHORT_WAIT_S = 0.3


@pytest.fixture(scope="module")
def gateway_settings(either_store: dict[str, Any]) -> dict[str, Any]:
    """Every test on a SQLite and on a PostgreSQL run store."""
    return either_store


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    return time_only(files)


def text_of(result: mtypes.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, mtypes.TextContent))


async def tool(session: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    """A successful tool call's structured content (its text is the same JSON)."""
    result = await session.call_tool(name, arguments)
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None
    return dict(data)


async def start(session: ClientSession, task: str, **arguments: Any) -> str:
    started = await tool(session, "start_task", task=task, **arguments)
    assert set(started) == {"run_id", "status"}, started
    assert started["run_id"].startswith("run_") and started["status"] in ("queued", "running"), started
    return str(started["run_id"])


async def until_done(session: ClientSession, run_id: str, wait_s: float = 5.0, within: int = 10) -> dict[str, Any]:
    """get_task_result until `done` (at most `within` calls of `wait_s` each); the last answer."""
    for _ in range(within):
        answer = await tool(session, "get_task_result", run_id=run_id, wait_s=wait_s)
        if answer["done"]:
            return answer
    raise AssertionError(f"run {run_id} not done after {within} waits of {wait_s:g} s: {answer}")


def check_completed_time_run(answer: dict[str, Any], run_id: str) -> dict[str, Any]:
    assert answer["done"] is True and answer["status"] == "completed", answer
    result = answer["result"]
    assert result["run_id"] == run_id and result["status"] == "completed", result
    assert result["output"] and "UTC" in result["output"], result["output"]
    [step] = result["steps"]
    assert (step["server"], step["tool"], step["is_error"]) == ("time", "get_current_time", False), step
    assert answer["progress"]["tool_calls"] == 1 and answer["progress"]["rounds"] == 1, answer["progress"]
    assert answer["progress"]["last_event"] == "run ended: completed", answer["progress"]
    return dict(result)


async def test_tools_are_listed_beside_the_original_ones(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == ORIGINAL_TOOLS | {"start_task", "get_task_result", "autonomous_pipeline"}
    assert tools["start_task"].input_schema["required"] == ["task"]
    assert tools["get_task_result"].input_schema["required"] == ["run_id"]
    wait = tools["get_task_result"].input_schema["properties"]["wait_s"]
    assert wait["maximum"] <= 55, wait  # stays within the ~60 s tool-call limit of MCP clients


async def test_start_task_returns_at_once_and_result_comes_later(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    # start_task checks the run first, which starts a cold MCP server: have the time server running
    warm = await live.post("/v1/autonomous", json={"task": TIME_TASK, "mcp_servers": ["time"]})
    assert warm.status_code == 200 and warm.json()["status"] == "completed", warm.text
    async with http_session(live) as session:
        # the run's first LM Studio answer waits at the mock's gate: start_task answers without it
        slow = "Slow time " + script(calls=[[TIME_CALL]], hold="start-task")
        run_id = await start(session, slow, mcp_servers=["time"])
        await mock.until_held("start-task")

        pending = await tool(session, "get_task_result", run_id=run_id, wait_s=SHORT_WAIT_S)
        assert pending["run_id"] == run_id and pending["done"] is False, pending
        assert pending["status"] == "running" and "result" not in pending, pending
        progress = pending["progress"]
        assert set(progress) == {"rounds", "tool_calls", "last_event"}, progress
        assert progress["tool_calls"] == 0 and isinstance(progress["last_event"], str), progress

        await mock.release("start-task")
        result = check_completed_time_run(await until_done(session, run_id), run_id)

        # the same run through the REST API
        stored = (await live.get(f"/v1/runs/{run_id}")).json()
        assert (stored["status"], stored["output"], stored["steps"]) == ("completed", result["output"], result["steps"])

        # asking again once it ended answers at once with the same result
        began = time.monotonic()
        again = await tool(session, "get_task_result", run_id=run_id, wait_s=30)
        assert time.monotonic() - began < 5
        assert again == await tool(session, "get_task_result", run_id=run_id, wait_s=0)
        assert again["result"] == result


async def test_task_started_over_rest_is_read_over_mcp(live: httpx.AsyncClient) -> None:
    accepted = await live.post("/v1/runs", json={"task": TIME_TASK, "mcp_servers": ["time"]})
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    async with http_session(live) as session:
        check_completed_time_run(await until_done(session, run_id), run_id)


async def test_failed_task_is_done_with_its_problem(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        run_id = await start(session, "boom " + script(fault={"kind": "status", "status": 500}), mcp_servers=[])
        answer = await until_done(session, run_id)
    assert answer["status"] == "failed", answer
    assert answer["result"]["error"]["code"] == "upstream_error", answer["result"]


async def test_unknown_run_id_is_run_not_found(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        result = await session.call_tool("get_task_result", {"run_id": "run_0000000000000000000nope", "wait_s": 0})
    assert result.is_error
    assert text_of(result).startswith("run_not_found: ")
    assert result.structured_content is not None and result.structured_content["code"] == "run_not_found"
    rest = await live.get("/v1/runs/run_0000000000000000000nope")
    assert rest.status_code == 404 and rest.json()["code"] == "run_not_found"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"task": "x", "model": "nope/nope"}, "model_not_found"),
        ({"task": "x", "mcp_servers": ["nope"]}, "mcp_server_not_found"),
    ],
)
async def test_start_task_refused_with_the_rest_code(
    live: httpx.AsyncClient, arguments: dict[str, Any], code: str
) -> None:
    async with http_session(live) as session:
        result = await session.call_tool("start_task", arguments)
    assert result.is_error and text_of(result).startswith(f"{code}: ")
    assert result.structured_content is not None and result.structured_content["code"] == code
    rest = await live.post("/v1/runs", json=arguments)
    assert rest.json()["code"] == code


async def test_original_tools_still_work(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        result = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK})
        assert not result.is_error, text_of(result)
        record = result.structured_content
        assert record is not None and record["status"] == "completed" and text_of(result) == record["output"]
        [step] = record["steps"]
        assert (step["server"], step["tool"]) == ("time", "get_current_time")
        stored = (await live.get(f"/v1/runs/{record['run_id']}")).json()  # the front door's runs are recorded too
        assert stored["status"] == "completed" and stored["steps"] == record["steps"]
        multiple = await session.call_tool("autonomous_with_multiple_mcps", {"mcp_names": ["time"], "task": TIME_TASK})
        assert not multiple.is_error and multiple.structured_content is not None
        assert multiple.structured_content["status"] == "completed"
        models = await tool(session, "list_models")
        assert "qwen/qwen3-4b" in [m["id"] for m in models["data"]]
        health = await tool(session, "health_check")
        assert health["status"] == "ready"
        servers = await tool(session, "list_available_mcps")
        assert [s["name"] for s in servers["data"]] == ["time"]
