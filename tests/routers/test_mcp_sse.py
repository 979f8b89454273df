"""An LM Studio mcp.json with a legacy HTTP+SSE server (`"type": "sse"`, or a URL ending in /sse) works through
the SDK's SSE client; an entry of an unknown type is disabled with a warning, the rest starts, and `check` fails."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import make_settings, served, store_url
from tests.helpers import REPO, call, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, log_file, log_tail, spawn_python, terminate, wait_healthy

pytestmark = pytest.mark.timeout(120)
WEIRD = 'mcp.json: server "weird": field "type" has unknown value \'websocket\''


@pytest.fixture(scope="module")
async def sse_url() -> AsyncIterator[str]:
    """tests/mcp_servers/sse_server.py on a free port: the base URL (its SSE endpoint is /sse)."""
    port = free_port()
    with log_file("sse-server") as log:
        process = await spawn_python("tests.mcp_servers.sse_server", "--port", str(port), log=log)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_healthy(f"{base}/health", process, log_tail=lambda: log_tail(log.name))
            yield base
        finally:
            await terminate(process)


@pytest.fixture
def legacy_json(tmp_path: Path, sse_url: str) -> Path:
    path = tmp_path / "mcp.json"
    servers = {
        "legacy": {"type": "sse", "url": f"{sse_url}/sse"},  # declared
        "bare": {"url": f"{sse_url}/sse"},  # LM Studio / Cursor style: the URL alone
        "weird": {"type": "websocket", "url": "ws://127.0.0.1:1/x"},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


async def test_sse_servers_list_and_call_tools_and_serve_a_run(
    mock: MockLMStudio, legacy_json: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(legacy_json))
    with caplog.at_level(logging.WARNING, logger="lmstudio_bridge"):
        async with served(settings) as client:
            listing = {s["name"]: s for s in (await client.get("/v1/mcp/servers")).json()["data"]}
            tools = (await client.get("/v1/mcp/servers/legacy/tools")).json()["data"]
            called = await client.post("/v1/mcp/servers/bare/tools/shout", json={"text": "quiet"})
            task = "Echo " + script(calls=[[call("legacy__echo", {"text": "over SSE"})]])
            run = (await client.post("/v1/autonomous", json={"task": task, "mcp_servers": ["legacy"]})).json()
            refused = await client.get("/v1/mcp/servers/weird/tools")
            after = {s["name"]: s for s in (await client.get("/v1/mcp/servers")).json()["data"]}
    assert listing["legacy"]["transport"] == listing["bare"]["transport"] == "sse"
    assert sorted(t["name"] for t in tools) == ["echo", "shout"]
    assert called.status_code == 200 and called.json()["content"][0]["text"] == "QUIET"
    assert run["status"] == "completed" and run["steps"][0]["output"] == "over SSE", run
    assert after["legacy"]["status"] == after["bare"]["status"] == "ready"
    # the unknown type: disabled, said why, and the gateway started anyway
    weird = after["weird"]
    assert (weird["transport"], weird["status"]) == ("unknown", "disabled") and weird["last_error"].startswith(WEIRD)
    assert refused.status_code == 503 and WEIRD in refused.json()["detail"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("MCP server 'weird' disabled: " + WEIRD) for m in warnings), warnings


def test_check_reports_the_unusable_entry_and_fails(mock: MockLMStudio, legacy_json: Path) -> None:
    env = {
        **os.environ,
        "LMSTUDIO_BASE_URL": mock.base_url,
        "MCP_CONFIG": str(legacy_json),
        "BRIDGE_DATABASE_URL": store_url(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[ok]   legacy: 2 tools (echo, shout)" in lines and "[ok]   bare: 2 tools (echo, shout)" in lines, lines
    assert any(line.startswith("[fail] weird: disabled: " + WEIRD) for line in lines), lines
    assert "MCP server 'weird' disabled" in done.stderr
