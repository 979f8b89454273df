"""The MCP SDK (~25 MB) is loaded on demand: a started gateway with MCP servers configured has not imported
it; the first `/mcp` request, or the first server session, loads it and works. A gateway on SQLite never
loads SQLAlchemy's PostgreSQL dialect (~2.5 MB), nor one that exports no spans the tracing instrumentations
(~4 MB).

Each case runs in a fresh interpreter: in this one, other tests have long imported the SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.routing import Route

from app.front_door import MCPFrontDoor
from app.main import create_app
from tests.conftest import make_settings, store_url
from tests.helpers import REPO

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

import app.cli  # the console script (`serve`) imports no SDK either
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import write_mcp_json

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def loaded():
    lazy = (
        "mcp",
        "mcp_types",
        "routers.mcp_front",
        "sqlalchemy.dialects.postgresql",
        "opentelemetry.instrumentation.fastapi",
        "opentelemetry.instrumentation.httpx",
    )
    return sorted(m for m in lazy if m in sys.modules)


async def main(mode, tmp):
    report = {"after_import": loaded()}
    config = write_mcp_json(Path(tmp) / "mcp.json", tmp)
    app = create_app(make_settings(mcp_config=str(config), mcp_warmup=False, database_url=sys.argv[3]))
    report["after_create_app"] = loaded()
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        report["after_startup"] = loaded()
        report["servers"] = app.state.bridge.pool.names()
        transport = httpx.ASGITransport(app=manager.app)
        # a loopback Host: the SDK's DNS-rebinding protection refuses others
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=60) as client:
            if mode == "front_door":
                response = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            else:
                response = await client.post("/v1/mcp/servers/time/tools/get_current_time", json={"timezone": "UTC"})
        report["status"] = response.status_code
        report["body"] = response.text
        report["after_request"] = loaded()
    print(json.dumps(report))


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
SSE = {"Accept": "application/json, text/event-stream"}


def run_case(mode: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BRIDGE_MCP_WARMUP", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(tmp_path), store_url()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def sse_data(body: str) -> dict[str, Any]:
    """The JSON-RPC message of a one-event SSE body."""
    [data] = [line.removeprefix("data:").strip() for line in body.splitlines() if line.startswith("data:")]
    message: dict[str, Any] = json.loads(data)
    return message


def test_first_request_to_the_front_door_loads_the_sdk(tmp_path: Path) -> None:
    report = run_case("front_door", tmp_path)
    assert report["servers"] == ["time", "filesystem", "memory", "everything", "fault"]
    assert report["after_import"] == report["after_create_app"] == report["after_startup"] == []
    assert report["status"] == 200, report["body"]
    message = sse_data(report["body"])
    assert message["id"] == 1 and message["result"]["serverInfo"]["name"] == "lmstudio-bridge"
    assert report["after_request"] == ["mcp", "mcp_types", "routers.mcp_front"]


def test_first_server_session_loads_the_sdk(tmp_path: Path) -> None:
    report = run_case("server", tmp_path)
    assert report["after_import"] == report["after_create_app"] == report["after_startup"] == []
    assert report["status"] == 200, report["body"]
    result = json.loads(report["body"])
    assert result["is_error"] is False and "UTC" in result["content"][0]["text"]
    assert report["after_request"] == ["mcp", "mcp_types"]  # the front door stays unbuilt


async def test_concurrent_first_requests_share_one_server_and_shutdown_ends_it() -> None:
    """In this interpreter (the SDK may be loaded already): one MCP server for racing first requests;
    the lifespan stops its session manager, after which `/mcp` answers 503."""
    app = create_app(make_settings(mcp_config=None))
    front_door = next(r.endpoint for r in app.router.routes if isinstance(r, Route) and r.path == "/mcp")
    assert isinstance(front_door, MCPFrontDoor) and not front_door.started
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/mcp", json=INITIALIZE, headers=SSE) for _ in range(3)))
            assert [r.status_code for r in responses] == [200] * 3
            assert len({r.headers["mcp-session-id"] for r in responses}) == 3
            owner = front_door._owner
            assert owner is not None and not owner.done()
            assert (await client.get("/mcp/")).status_code == 404  # exactly `/mcp`, no redirect
    assert owner.done() and not owner.cancelled()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as client:
        late = await client.post("/mcp", json=INITIALIZE, headers=SSE)
    assert late.status_code == 503 and late.json()["code"] == "shutting_down"
