"""Tool calls written as text and reasoning in `<think>`, through the HTTP front doors.

The corpus of real answer formats (tests/data/local_model_answers) goes through
`/v1/chat/completions`: its tools are offered as the client's own function tools, so recovered calls
come back as ordinary `tool_calls`. Runs recover calls to MCP tools and execute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, served
from tests.helpers import read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "local_model_answers" / "tool_calls.json").read_text())
POSITIVE = [c for c in CORPUS if c["expected"] and c["expected"].get("calls") and not c.get("known_miss")]
NEGATIVE = [c for c in CORPUS if not c["expected"] or not c["expected"].get("calls")]
HERMES = '<tool_call>\n{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}\n</tool_call>'
WRITTEN = {
    "hermes": "Let me check. " + HERMES,
    "mistral": '[TOOL_CALLS][{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]',
    "llama_python_tag": '<|python_tag|>{"name": "time__get_current_time", "parameters": {"timezone": "Asia/Tokyo"}}',
    "bare_json": '{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}',
    "fenced_json": 'Sure:\n```json\n{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}\n```',
}


def function_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


@pytest.mark.parametrize("case", POSITIVE, ids=[c["id"] for c in POSITIVE])
async def test_the_corpus_comes_back_as_tool_calls(live: httpx.AsyncClient, case: dict[str, Any]) -> None:
    body = {
        "messages": [{"role": "user", "content": "Go " + script(answer=case["content"])}],
        "mcp_servers": ["time"],
        "tools": [function_tool(name) for name in case["offered"]],
    }
    answer = (await live.post("/v1/chat/completions", json=body)).json()
    message = answer["choices"][0]["message"]
    got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    assert got == [(c["name"], c["arguments"]) for c in case["expected"]["calls"]], message
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("case", NEGATIVE, ids=[c["id"] for c in NEGATIVE])
async def test_what_is_not_a_call_stays_text(live: httpx.AsyncClient, case: dict[str, Any]) -> None:
    body = {
        "messages": [{"role": "user", "content": "Go " + script(answer=case["content"])}],
        "mcp_servers": ["time"],
        "tools": [function_tool(name) for name in case["offered"]],
    }
    answer = (await live.post("/v1/chat/completions", json=body)).json()
    assert not answer["choices"][0]["message"].get("tool_calls")
    assert answer["bridge_run"]["steps"] == []


@pytest.mark.parametrize("fmt", sorted(WRITTEN))
async def test_a_run_executes_calls_written_as_text(live: httpx.AsyncClient, fmt: str) -> None:
    body = {"task": "Time? " + script(answer=WRITTEN[fmt]), "mcp_servers": ["time"]}
    result = (await live.post("/v1/autonomous", json=body)).json()
    assert result["status"] == "completed" and len(result["steps"]) == 1, result
    step = result["steps"][0]
    assert (step["name"], step["arguments"], step["recovered_from"]) == (
        "time__get_current_time",
        {"timezone": "Asia/Tokyo"},
        fmt,
    )
    assert not step["is_error"] and "Asia/Tokyo" in step["output"]
    assert "<tool_call>" not in result["output"] and "time__get_current_time" not in result["output"]
    async with live.stream("POST", "/v1/autonomous", json={**body, "stream": True}) as response:
        events = await read_sse(response)
    names = [name for name, _ in events]
    assert "tool_call.started" in names and "tool_call.completed" in names
    assert events[-1][1]["steps"][0]["recovered_from"] == fmt


async def test_a_call_to_a_tool_not_offered_is_not_executed(live: httpx.AsyncClient) -> None:
    text = '<tool_call>{"name": "filesystem__write_file", "arguments": {"path": "x"}}</tool_call>'
    result = (
        await live.post("/v1/autonomous", json={"task": "x " + script(answer=text), "mcp_servers": ["time"]})
    ).json()
    assert result["steps"] == [] and result["output"] == text


async def test_recovery_is_counted_by_format(live: httpx.AsyncClient) -> None:
    await live.post("/v1/autonomous", json={"task": "t " + script(answer=WRITTEN["hermes"]), "mcp_servers": ["time"]})
    metrics = (await live.get("/metrics")).text
    assert 'bridge_text_tool_calls_recovered_total{format="hermes"}' in metrics


async def test_recovery_can_be_turned_off(mock: MockLMStudio, mcp_json: Path) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), text_tool_calls=False)
    async with served(settings) as gateway:
        body = {"task": "Time? " + script(answer=HERMES), "mcp_servers": ["time"]}
        result = (await gateway.post("/v1/autonomous", json=body)).json()
    assert result["steps"] == [] and result["output"] == HERMES


# --- reasoning ---------------------------------------------------------------------------------------


async def test_reasoning_never_reaches_the_output(live: httpx.AsyncClient) -> None:
    task = "Think " + script(reasoning="The user wants the time; call the tool.", answer="It is noon.")
    result = (await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})).json()
    assert result["output"] == "It is noon." and "<think>" not in result["output"]
    assert result["reasoning"] == [{"round": 1, "content": "The user wants the time; call the tool."}]
    async with live.stream("POST", "/v1/autonomous", json={"task": task, "mcp_servers": ["time"], "stream": True}) as r:
        events = await read_sse(r)
    assert ("reasoning", {"round": 1, "content": "The user wants the time; call the tool."}) in events
    assert all("<think>" not in json.dumps(data) for name, data in events if name == "message")


@pytest.mark.parametrize("with_mcp", [True, False], ids=["run", "pass-through"])
async def test_chat_completions_return_reasoning_content(live: httpx.AsyncClient, with_mcp: bool) -> None:
    task = "Think " + script(reasoning="Reasoning here.", answer="It is noon.")
    body: dict[str, Any] = {"messages": [{"role": "user", "content": task}]}
    if with_mcp:
        body["mcp_servers"] = ["time"]
    message = (await live.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]
    assert (message["content"].strip(), message["reasoning_content"]) == ("It is noon.", "Reasoning here.")
    async with live.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        raw = (await response.aread()).decode()
    deltas = [json.loads(line[6:])["choices"] for line in raw.splitlines() if line.startswith("data: {")]
    deltas = [c[0]["delta"] for c in deltas if c]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Reasoning here."
    assert "".join(d.get("content") or "" for d in deltas).strip() == "It is noon."


def as_fault_echo(case: dict[str, Any]) -> str:
    """The case's content with every offered tool renamed to the fault server's `echo` (run end to end)."""
    content = case["content"]
    for name in sorted(case["offered"], key=len, reverse=True):
        content = content.replace(name, "fault__echo")
    return str(content)


@pytest.mark.parametrize("case", POSITIVE, ids=[c["id"] for c in POSITIVE])
async def test_the_corpus_runs_on_autonomous_json_and_sse(live: httpx.AsyncClient, case: dict[str, Any]) -> None:
    body = {"task": "Go " + script(answer=as_fault_echo(case)), "mcp_servers": ["fault"]}
    expected = [("fault__echo", c["arguments"], case["expected"]["format"]) for c in case["expected"]["calls"]]
    result = (await live.post("/v1/autonomous", json=body)).json()
    steps = [(s["name"], s["arguments"], s["recovered_from"]) for s in result["steps"]]
    assert sorted(steps, key=json.dumps) == sorted(expected, key=json.dumps), result  # calls of a round run at once
    async with live.stream("POST", "/v1/autonomous", json={**body, "stream": True}) as response:
        events = await read_sse(response)
    started = [data for name, data in events if name == "tool_call.started"]
    assert len(started) == len(expected) and events[-1][0] == "run.completed"
    assert [s["recovered_from"] for s in events[-1][1]["steps"]] == [e[2] for e in expected]
