"""Tool annotations (readOnlyHint, destructiveHint) in tool listings and in approval rules: `destructive` in
BRIDGE_APPROVAL_TOOLS or a server's `bridge.approval_tools` names the tools whose hints do not say they are safe."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest

from tests.helpers import REPO, call, script
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mcp_extra() -> dict[str, dict[str, Any]]:
    fault = {"command": sys.executable, "args": ["-m", "tests.mcp_servers.fault_server"], "cwd": str(REPO)}
    # `gated` asks for approval of its destructive tools itself; `fault` through BRIDGE_APPROVAL_TOOLS
    return {"fault": fault, "gated": {**fault, "bridge": {"approval_tools": ["destructive"]}}}


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"approval_tools": ["fault__destructive_never_matches_this", "destructive"]}


async def test_listing_shows_the_hints(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/mcp/servers/fault/tools")
    assert response.status_code == 200, response.text
    tools = {t["name"]: t for t in response.json()["data"]}
    assert tools["echo"]["annotations"] == {"readOnlyHint": True} and tools["echo"]["destructive"] is False
    assert tools["add"]["annotations"] == {"readOnlyHint": True, "idempotentHint": True}
    assert tools["fail"]["annotations"] == {"readOnlyHint": False, "destructiveHint": False}
    assert tools["fail"]["destructive"] is False
    assert tools["crash"]["annotations"] == {"destructiveHint": True} and tools["crash"]["destructive"] is True
    # no hints: MCP's defaults, destructive
    assert tools["pid"]["annotations"] is None and tools["pid"]["destructive"] is True


@pytest.mark.parametrize("server", ["fault", "gated"])
async def test_destructive_tools_need_approval(bridge: httpx.AsyncClient, mock: MockLMStudio, server: str) -> None:
    calls = [call(f"{server}__echo", {"text": "hi"}), call(f"{server}__fail", {"message": "no"})]
    calls.append(call(f"{server}__pid", {}))
    task = "Go. " + script(calls=[calls])
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": [server]})
    assert response.status_code == 200, response.text
    result = response.json()
    echo, fail, pid = result["steps"]
    assert echo["output"] == "hi" and echo["approval"] is None  # read-only: runs
    assert fail["approval"] is None and "no" in fail["output"]  # not destructive by its hints: runs (and fails)
    # no hints: destructive; a synchronous run cannot wait for a person, so it is denied
    assert pid["approval"] == "denied" and pid["is_error"]
    assert any(f"{server}__pid" in w for w in result["warnings"])
