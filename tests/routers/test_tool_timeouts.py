"""Per-tool timeouts (mcp.json `bridge.tool_timeouts`) and progress through HTTP: the direct call, a run's step
record and /metrics show the timeout that applied, the progress resets and the limit that cut a call."""

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
    return {"prog": {**fault, "timeout": 30, "bridge": {"tool_timeouts": {"progress": 0.5, "slow": 0.5}}}}


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"mcp_progress_max_s": 2.5}


async def test_direct_call_reports_its_timeout_and_progress(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/prog/tools/progress", json={"seconds": 1.5, "every": 0.1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"][0]["text"] == "done"
    assert body["timeout_s"] == 0.5 and body["progress_resets"] >= 10
    echo = (await bridge.post("/v1/mcp/servers/prog/tools/echo", json={"text": "x"})).json()
    assert echo["timeout_s"] == 30 and echo["progress_resets"] == 0


async def test_direct_call_cut_at_the_hard_maximum_is_504(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/mcp/servers/prog/tools/progress", json={"seconds": 30, "every": 0.1})
    assert response.status_code == 504
    problem = response.json()
    assert problem["code"] == "tool_timeout" and problem["limit"] == "hard_max"
    assert problem["timeout_s"] == 0.5 and problem["progress_resets"] >= 5
    metrics = (await bridge.get("/metrics")).text
    assert 'bridge_tool_timeouts_total{limit="hard_max",server="prog",tool="progress"} 1.0' in metrics
    assert 'bridge_tool_progress_resets_total{server="prog",tool="progress"}' in metrics


async def test_step_record_shows_timeouts_and_resets(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    calls = [call("prog__progress", {"seconds": 1.2, "every": 0.1}), call("prog__slow", {"seconds": 30})]
    task = "Work. " + script(calls=[calls])
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["prog"]})
    assert response.status_code == 200, response.text
    progress, slow = response.json()["steps"]
    assert progress["output"] == "done" and not progress["is_error"]
    assert progress["timeout_s"] == 0.5 and progress["progress_resets"] >= 8 and progress["timed_out"] is None
    assert slow["is_error"] and "did not answer within 0.5s" in slow["output"]
    assert slow["timeout_s"] == 0.5 and slow["progress_resets"] == 0 and slow["timed_out"] == "timeout"
