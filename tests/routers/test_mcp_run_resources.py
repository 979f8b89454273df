"""Runs as MCP resources: `run://{run_id}` read and subscribed to with the SDK's client against `/mcp` (real
uvicorn), within the API key's scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mtypes
import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers import TIME_CALL, eventually, script
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.routers.front_door import ALICE, BOB, TIME_TASK, alice_and_bob, time_only

# the handshake revisions' resources/subscribe, which the SDK's client marks deprecated (2026-07-28 listens instead)
pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:resources/subscribe is removed")]


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    return time_only(files)


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return alice_and_bob(tmp_path_factory.mktemp("keys"))


async def read_run(session: Any, run_id: str) -> dict[str, Any]:
    result = await session.read_resource(f"run://{run_id}")
    [content] = result.contents
    assert isinstance(content, mtypes.TextResourceContents) and content.mime_type == "application/json"
    return dict(json.loads(content.text))


async def finished_record(session: Any, run_id: str) -> dict[str, Any] | None:
    record = await read_run(session, run_id)
    return record if record["status"] == "completed" else None


async def test_a_run_is_a_resource_of_its_key(live: httpx.AsyncClient) -> None:
    async with http_session(live, **ALICE) as session:
        templates = (await session.list_resource_templates()).resource_templates
        assert [(t.uri_template, t.mime_type) for t in templates] == [("run://{run_id}", "application/json")]
        result = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK})
        assert result.structured_content is not None
        run_id = result.structured_content["run_id"]
        record = await read_run(session, run_id)
    rest = await live.get(f"/v1/runs/{run_id}", headers=ALICE)
    assert record == rest.json() and record["status"] == "completed" and record["steps"], record
    async with http_session(live, **BOB) as session:  # another key's run is not found, as over REST
        with pytest.raises(MCPError, match="No run with id"):
            await read_run(session, run_id)
        with pytest.raises(MCPError, match="No run with id"):
            await session.subscribe_resource(f"run://{run_id}")
    assert (await live.get(f"/v1/runs/{run_id}", headers=BOB)).status_code == 404


async def test_a_subscriber_hears_of_each_update_until_the_end(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, mtypes.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))

    # the time server started first: start_task checks the run (a cold server starts) before it answers
    warm = await live.post("/v1/autonomous", json={"task": TIME_TASK, "mcp_servers": ["time"]}, headers=ALICE)
    assert warm.status_code == 200, warm.text
    async with http_session(live, message_handler=on_message, **ALICE) as session:
        init = session.initialize_result
        assert init is not None and init.capabilities.resources is not None
        assert init.capabilities.resources.subscribe is True
        held = "Slow time " + script(calls=[[TIME_CALL]], hold="subscribed")
        started = await session.call_tool("start_task", {"task": held, "mcp_servers": ["time"]})
        assert started.structured_content is not None
        run_id = started.structured_content["run_id"]
        await mock.until_held("subscribed")
        await session.subscribe_resource(f"run://{run_id}")
        with pytest.raises(MCPError, match="Only run://"):
            await session.subscribe_resource("file:///etc/passwd")
        await mock.release("subscribed")

        # one notification per run event after the subscription (round, tool call, message, the end): then the
        # record read over MCP is the finished run
        await eventually(lambda: len(updated) >= 4, 30, "four resource updates")
        record = await eventually(lambda: finished_record(session, run_id), 30, f"run {run_id} read completed")
    assert set(updated) == {f"run://{run_id}"} and record["steps"][0]["tool"] == "get_current_time"
