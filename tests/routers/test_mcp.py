"""MCP endpoints through HTTP against real MCP servers (PyPI, npm and our fault server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.errors import MCPConfigError
from tests.conftest import HELLO, app_client, make_settings
from tests.helpers import REPO, write_mcp_json
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(180)
SECRET = "sk-very-secret-value-123"


@pytest.fixture(scope="module")
def mcp_extra() -> dict[str, dict[str, Any]]:
    fault = {"command": sys.executable, "args": ["-m", "tests.mcp_servers.fault_server"], "cwd": str(REPO)}
    return {
        "slow": {**fault, "timeout": 1, "env": {"FAULT_TOKEN": SECRET}},
        "broken": {**fault, "args": [*fault["args"], "--crash-on-start"]},
        "missing": {"command": "/nonexistent/mcp-server-binary"},
        "off": {"command": "whatever", "disabled": True},
    }


async def test_server_list_shows_names_never_values(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/mcp/servers")
    assert response.status_code == 200
    body = response.json()
    assert body["config_path"].endswith("mcp.json")
    by_name = {s["name"]: s for s in body["data"]}
    assert by_name["slow"]["env"] == ["FAULT_TOKEN"]
    assert by_name["off"]["status"] == "disabled"
    assert by_name["time"]["transport"] == "stdio"
    assert SECRET not in response.text


async def test_time_tool(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/time/tools/get_current_time", json={"timezone": "UTC"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_error"] is False
    assert "UTC" in body["content"][0]["text"]


async def test_filesystem_read_text_file(bridge: httpx.AsyncClient, files: Path) -> None:
    response = await bridge.post(
        "/v1/mcp/servers/filesystem/tools/read_text_file", json={"path": str(files / "hello.txt")}
    )
    assert response.json()["content"][0]["text"] == HELLO


async def test_memory_keeps_state_in_one_session(bridge: httpx.AsyncClient) -> None:
    entity = {"name": "Grace", "entityType": "person", "observations": ["found a moth"]}
    created = await bridge.post("/v1/mcp/servers/memory/tools/create_entities", json={"entities": [entity]})
    assert created.status_code == 200 and not created.json()["is_error"]
    graph = await bridge.post("/v1/mcp/servers/memory/tools/read_graph", json={})
    assert "Grace" in json.dumps(graph.json())


async def test_everything_echo(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/everything/tools/echo", json={"message": "ping"})
    assert "ping" in response.json()["content"][0]["text"]


async def test_tool_list_with_schemas(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/mcp/servers/time/tools")
    tools = {t["name"]: t for t in response.json()["data"]}
    assert tools["get_current_time"]["model_name"] == "time__get_current_time"
    assert tools["get_current_time"]["input_schema"]["required"] == ["timezone"]


async def test_schema_violation_is_422_before_the_call(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/slow/tools/add", json={"a": "x"})
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any("'b' is a required property" in v for v in problem["violations"])
    assert any("not of type 'integer'" in v for v in problem["violations"])


async def test_tool_error_is_200_with_is_error(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/slow/tools/fail", json={"message": "nope"})
    assert response.status_code == 200
    assert response.json()["is_error"] is True


@pytest.mark.parametrize("name", ["broken", "missing"])
async def test_server_that_cannot_start_is_503(bridge: httpx.AsyncClient, name: str) -> None:
    response = await bridge.post(f"/v1/mcp/servers/{name}/tools/echo", json={"text": "x"})
    assert response.status_code == 503
    assert response.json()["code"] == "mcp_server_unavailable"
    status = {s["name"]: s for s in (await bridge.get("/v1/mcp/servers")).json()["data"]}[name]
    assert status["status"] == "failed" and status["last_error"]


async def test_disabled_server_is_503(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/mcp/servers/off/tools")
    assert response.status_code == 503 and "disabled" in response.json()["detail"]


async def test_hanging_tool_is_504_then_server_still_works(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/slow/tools/hang", json={})
    assert response.status_code == 504
    assert response.json()["code"] == "tool_timeout"
    echo = await bridge.post("/v1/mcp/servers/slow/tools/echo", json={"text": "alive"})
    assert echo.status_code == 200 and "alive" in echo.text


@pytest.mark.parametrize(
    ("path", "listed"),
    [
        ("/v1/mcp/servers/nope/tools", "available_servers"),
        ("/v1/mcp/servers/time/tools/nope", "available_tools"),
        ("/v1/mcp/servers/everything/tools/nope", "available_tools"),
    ],
)
async def test_unknown_names_in_path_are_404(bridge: httpx.AsyncClient, path: str, listed: str) -> None:
    response = await (bridge.get(path) if path.endswith("/tools") else bridge.post(path, json={}))
    assert response.status_code == 404
    assert response.json()[listed]


async def test_thousand_calls_one_process(bridge: httpx.AsyncClient) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for i in range(1000):
        response = await bridge.post("/v1/mcp/servers/slow/tools/echo", json={"text": str(i)})
        assert response.status_code == 200
    spawned = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert spawned == set()  # the session (started by earlier tests or the first call) was reused
    pids = {
        (await bridge.post("/v1/mcp/servers/slow/tools/pid", json={})).json()["content"][0]["text"] for _ in range(5)
    }
    assert len(pids) == 1


async def test_no_mcp_json_means_no_servers(
    mock: MockLMStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as client:
        body = (await client.get("/v1/mcp/servers")).json()
    assert body == {"data": [], "config_path": None}


async def test_shutdown_leaves_no_child_process(mock: MockLMStudio, files: Path, tmp_path: Path) -> None:
    config = write_mcp_json(tmp_path / "mcp.json", str(files))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    async with app_client(make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(config))) as client:
        for server, tool, args in [
            ("time", "get_current_time", {"timezone": "UTC"}),
            ("memory", "read_graph", {}),
            ("everything", "echo", {"message": "x"}),
        ]:
            assert (await client.post(f"/v1/mcp/servers/{server}/tools/{tool}", json=args)).status_code == 200
        assert len({p.pid for p in psutil.Process().children(recursive=True)} - before) >= 3
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


def test_broken_config_stops_start_up(tmp_path: Path) -> None:
    from app.main import create_app

    bad = tmp_path / "mcp.json"
    bad.write_text(json.dumps({"mcpServers": {"fs": {"args": ["x"]}}}))
    with pytest.raises(MCPConfigError, match='"fs"'):
        create_app(make_settings(mcp_config=str(bad)))
