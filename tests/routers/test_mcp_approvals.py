"""Approvals by elicitation at the MCP front door: the SDK's client (with and without an `elicitation_callback`)
against `/mcp` (real uvicorn) and `lmstudio-bridge mcp` (stdio), the time server's tool needing approval."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any, Literal

import httpx
import mcp_types as mtypes
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.conftest import store_url
from tests.helpers import REPO, events_of, record
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.routers.front_door import TIME_TASK, time_only

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    return time_only(files)


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"approval_tools": ["time__*"]}


class Client:
    """An elicitation callback that answers each form with `answer` (or waits for `release` first) and keeps
    what it was asked."""

    def __init__(self, answer: mtypes.ElicitResult, release: asyncio.Event | None = None) -> None:
        self.answer = answer
        self.release = release
        self.asked: list[mtypes.ElicitRequestFormParams] = []
        self.waiting = asyncio.Event()

    async def __call__(self, context: Any, params: mtypes.ElicitRequestParams) -> mtypes.ElicitResult:
        assert isinstance(params, mtypes.ElicitRequestFormParams), params
        self.asked.append(params)
        self.waiting.set()
        if self.release is not None:
            await self.release.wait()
        return self.answer


def accept(decision: str, reason: str = "") -> mtypes.ElicitResult:
    return mtypes.ElicitResult(action="accept", content={"decision": decision, "reason": reason})


async def run_tool(session: ClientSession, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK, **arguments})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def decisions(live: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """The run's stored approval events, in order."""
    return [
        {"event": f.event, **f.data}
        for f in await events_of(live, run_id)
        if f.event in ("approval.requested", "approval.decided")
    ]


def check_form(asked: mtypes.ElicitRequestFormParams) -> None:
    """The form shows the server, the tool and the exact arguments, and asks approve / deny with a reason."""
    assert "'get_current_time'" in asked.message and "'time'" in asked.message, asked.message
    assert '"timezone": "UTC"' in asked.message, asked.message
    schema = asked.requested_schema
    properties = schema["properties"]
    assert properties["decision"]["enum"] == ["approve", "deny"] and schema["required"] == ["decision"]
    assert properties["reason"]["type"] == "string"


async def test_the_client_is_asked_and_its_yes_runs_the_call(live: httpx.AsyncClient) -> None:
    client = Client(accept("approve", "fine"))
    async with http_session(live, elicitation_callback=client) as session:
        result = await run_tool(session)
    assert result["status"] == "completed", result
    [step] = result["steps"]
    assert (step["tool"], step["approval"], step["is_error"]) == ("get_current_time", "approved", False), step
    assert step["arguments"] == {"timezone": "UTC"} and "UTC" in step["output"]
    [asked] = client.asked
    check_form(asked)
    assert step["tool_call_id"] in asked.message
    # the same events and record as a decision over REST
    requested, decided = await decisions(live, result["run_id"])
    assert requested["event"] == "approval.requested" and requested["arguments"] == {"timezone": "UTC"}
    assert (decided["event"], decided["decision"], decided["reason"]) == ("approval.decided", "approved", "fine")
    assert (await record(live, result["run_id"]))["steps"] == result["steps"]
    assert result["warnings"] == []


async def test_a_deny_with_reason_reaches_the_model(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    client = Client(accept("deny", "not on my watch"))
    async with http_session(live, elicitation_callback=client) as session:
        result = await run_tool(session)
    assert result["status"] == "completed", result
    [step] = result["steps"]
    assert step["approval"] == "denied" and step["is_error"] is True
    assert "a person denied it: not on my watch" in step["output"]
    tool_messages = [m for r in await mock.chat_requests() for m in r["body"]["messages"] if m.get("role") == "tool"]
    assert tool_messages and "not on my watch" in tool_messages[-1]["content"]
    [_, decided] = await decisions(live, result["run_id"])
    assert (decided["decision"], decided["reason"]) == ("denied", "not on my watch")


@pytest.mark.parametrize(
    ("action", "reason"),
    [("decline", "declined to decide"), ("cancel", "dismissed the request")],
)
async def test_a_declined_or_dismissed_form_denies(
    live: httpx.AsyncClient, action: Literal["decline", "cancel"], reason: str
) -> None:
    client = Client(mtypes.ElicitResult(action=action))
    async with http_session(live, elicitation_callback=client) as session:
        result = await run_tool(session)
    [step] = result["steps"]
    assert step["approval"] == "denied" and reason in step["output"], step


async def test_the_rest_route_still_decides_while_the_client_is_asked(live: httpx.AsyncClient) -> None:
    release = asyncio.Event()
    client = Client(accept("deny", "too late"), release)
    async with http_session(live, elicitation_callback=client) as session:
        running = asyncio.create_task(run_tool(session))
        await asyncio.wait_for(client.waiting.wait(), 30)
        runs = (await live.get("/v1/runs", params={"status": "awaiting_approval"})).json()["data"]
        [run_id] = [r["run_id"] for r in runs]
        asked = re.search(r"call (\S+)\)", client.asked[0].message)
        assert asked is not None, client.asked[0].message
        call_id = asked[1]
        decided = await live.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(running, 30)
        release.set()  # the form's late answer decides nothing
    [step] = result["steps"]
    assert step["approval"] == "approved" and step["is_error"] is False, step
    assert [e["event"] for e in await decisions(live, run_id)] == ["approval.requested", "approval.decided"]


async def test_a_client_without_elicitation_keeps_todays_behaviour(live: httpx.AsyncClient) -> None:
    async with http_session(live) as session:
        result = await run_tool(session)
    [step] = result["steps"]
    assert step["approval"] == "denied" and "which this run cannot ask for" in step["output"], step
    assert any("elicitation" in w for w in result["warnings"]), result["warnings"]
    assert await decisions(live, result["run_id"]) == []  # no approval events, as for any synchronous run


async def test_stdio_client_is_asked(mock: MockLMStudio, mcp_json: Path) -> None:
    env = {"LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": str(mcp_json), "BRIDGE_APPROVAL_TOOLS": "time__*"}
    env["BRIDGE_DATABASE_URL"] = store_url()
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"], env=env, cwd=str(REPO))
    client = Client(accept("approve"))
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, elicitation_callback=client) as session,
    ):
        await session.initialize()
        result = await run_tool(session)
    [step] = result["steps"]
    assert step["approval"] == "approved" and step["is_error"] is False, step
    check_form(client.asked[0])
