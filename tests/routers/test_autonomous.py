"""The agent loop through HTTP: mock LM Studio as a real server, real MCP servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.helpers import TIME_CALL, call, read_sse, script, sse_events
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"


async def test_reads_a_file_through_filesystem(bridge: httpx.AsyncClient, mock: MockLMStudio, files: Path) -> None:
    path = str(files / "notes.txt")
    (files / "notes.txt").write_text("The launch code is PELICAN-42.")
    task = "What is the launch code? " + script(calls=[[call("filesystem__read_text_file", {"path": path})]])
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["filesystem"]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed"
    assert "PELICAN-42" in result["output"]
    assert result["model"] == "qwen/qwen3-4b"
    assert result["mcp_servers"] == ["filesystem"]
    assert result["rounds"] == 1
    [step] = result["steps"]
    assert step["server"] == "filesystem" and step["tool"] == "read_text_file"
    assert step["arguments"] == {"path": path}
    assert "PELICAN-42" in step["output"] and step["is_error"] is False
    assert step["duration_ms"] > 0 and step["round"] == 1
    assert result["run_id"].startswith("run_") and result["duration_ms"] > 0
    # usage is the sum over both LLM calls: replay the two recorded requests against the mock
    requests = await mock.chat_requests()
    assert len(requests) == 2
    assert requests[1]["body"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": step["tool_call_id"],
        "content": step["output"],
    }
    async with httpx.AsyncClient(base_url=mock.base_url) as direct:
        usages = [(await direct.post(r["path"], json=r["body"])).json()["usage"] for r in requests]
    assert result["usage"] == {
        k: sum(u[k] for u in usages) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


async def test_two_servers_in_one_run(bridge: httpx.AsyncClient) -> None:
    entity = {"entities": [{"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}]}
    task = "Remember Ada and tell the time. " + script(calls=[[TIME_CALL, call("memory__create_entities", entity)]])
    result = (await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time", "memory"]})).json()
    assert result["status"] == "completed"
    assert [s["server"] for s in result["steps"]] == ["time", "memory"]  # in the order the model made the calls
    assert all(not s["is_error"] for s in result["steps"])
    assert "UTC" in result["output"] and "Ada" in result["output"]


async def test_calls_of_one_round_overlap(bridge: httpx.AsyncClient) -> None:
    task = "Two slow things " + script(
        calls=[[call("fault__slow", {"seconds": 0.4}), call("fault__slow", {"seconds": 0.4})]]
    )
    body = {"task": task, "mcp_servers": ["fault"], "stream": True}
    async with bridge.stream("POST", "/v1/autonomous", json=body) as response:
        kinds = [event for event, _ in await read_sse(response) if event.startswith("tool_call")]
    # both calls started before either completed
    assert kinds == ["tool_call.started", "tool_call.started", "tool_call.completed", "tool_call.completed"]


@pytest.mark.parametrize(
    ("bad_call", "error_text"),
    [
        (call("fault__echo", '{"text": "unterminated'), "not valid JSON"),
        (call("fault__nope", {}), "no tool named 'fault__nope'"),
        (call("fault__add", {"a": "one", "b": 2}), "do not match the tool's input schema"),
        (call("fault__fail", {"message": "disk on fire"}), "disk on fire"),
    ],
)
async def test_bad_calls_go_back_to_the_model(
    bridge: httpx.AsyncClient, mock: MockLMStudio, bad_call: dict[str, Any], error_text: str
) -> None:
    task = "Try it " + script(calls=[[bad_call]])
    result = (await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"]})).json()
    assert result["status"] == "completed"
    [step] = result["steps"]
    assert step["is_error"] is True
    assert error_text in step["output"]
    tool_message = (await mock.chat_requests())[-1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool" and error_text in tool_message["content"]
    assert error_text in result["output"]


async def test_numeric_strings_are_coerced(bridge: httpx.AsyncClient) -> None:
    task = "Add " + script(calls=[[call("fault__add", {"a": "2", "b": "40"})]])
    result = (await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"]})).json()
    [step] = result["steps"]
    assert step["arguments"] == {"a": 2, "b": 40}
    assert not step["is_error"] and "42" in step["output"]


async def test_long_tool_output_is_cut_for_the_model_and_kept_whole_in_the_record(
    bridge: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.reset()
    task = "Huge " + script(calls=[[call("fault__huge", {"chars": 50_000})]])
    result = (await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"]})).json()
    [step] = result["steps"]
    assert step["output"] == "x" * 50_000
    [tool_message] = [m for m in (await mock.chat_requests())[-1]["body"]["messages"] if m["role"] == "tool"]
    seen = tool_message["content"]
    # cut at BRIDGE_TOOL_OUTPUT_MAX_CHARS, then to the default 4096-token window: beginning and end kept
    assert seen.startswith("x" * 1000) and len(seen) < 20_000
    assert "cut by lmstudio-bridge to fit the context window" in seen and "bridge__read_output" in seen
    fits = [f for f in result["context"] if f["action"] == "output"]  # cut, then cut again to make room
    assert fits and all(f["tokens_after"] < f["tokens_before"] for f in fits)


async def test_model_that_never_stops_gets_max_rounds(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "Loop " + script(forever=TIME_CALL)
    body = {"task": task, "mcp_servers": ["time"], "max_rounds": 2}  # below BRIDGE_REPEAT_CALL_LIMIT (3)
    result = (await bridge.post("/v1/autonomous", json=body)).json()
    assert result["status"] == "max_rounds"
    assert result["rounds"] == 2 and len(result["steps"]) == 2
    assert result["output"]
    requests = await mock.chat_requests()
    assert len(requests) == 3
    assert all("tools" in r["body"] for r in requests[:2]) and "tools" not in requests[2]["body"]


async def test_model_repeating_one_call_ends_with_loop(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "Loop " + script(forever=TIME_CALL)
    result = (await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})).json()
    assert (result["status"], result["rounds"], len(result["steps"])) == ("loop", 2, 2)
    assert result["output"] and any("repeated the same tool call" in w for w in result["warnings"])
    requests = await mock.chat_requests()
    assert len(requests) == 4 and "tools" not in requests[3]["body"]
    async with bridge.stream(
        "POST", "/v1/autonomous", json={"task": task, "mcp_servers": ["time"], "stream": True}
    ) as r:
        events = await read_sse(r)
    assert events[-1][0] == "run.completed" and events[-1][1]["status"] == "loop"


async def test_unknown_model_server_and_tool_are_422(bridge: httpx.AsyncClient) -> None:
    model = await bridge.post("/v1/autonomous", json={"task": "x", "model": "nope/nope"})
    assert model.status_code == 422 and model.json()["code"] == "model_not_found"
    assert "qwen/qwen3-4b" in model.json()["available_models"]
    server = await bridge.post("/v1/autonomous", json={"task": "x", "mcp_servers": ["nope"]})
    assert server.status_code == 422 and server.json()["code"] == "mcp_server_not_found"
    assert {"time", "filesystem", "memory"} <= set(server.json()["available_servers"])
    tools = await bridge.post(
        "/v1/autonomous", json={"task": "x", "mcp_servers": ["time"], "allowed_tools": ["memory__read_graph"]}
    )
    assert tools.status_code == 422 and tools.json()["code"] == "validation_error"
    assert tools.json()["unknown_tools"] == ["memory__read_graph"]
    extra = await bridge.post("/v1/autonomous", json={"task": "x", "command": "rm -rf /"})
    assert extra.status_code == 422 and extra.json()["code"] == "validation_error"


async def test_allowed_tools_narrow_what_is_offered(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body = {"task": "hi", "mcp_servers": ["time"], "allowed_tools": ["time__get_current_time"]}
    assert (await bridge.post("/v1/autonomous", json=body)).status_code == 200
    offered = [t["function"]["name"] for t in (await mock.chat_requests())[0]["body"]["tools"]]
    assert offered == ["time__get_current_time"]


async def test_stream_events_in_order(bridge: httpx.AsyncClient) -> None:
    task = "Time? " + script(calls=[[TIME_CALL]])
    async with bridge.stream(
        "POST", "/v1/autonomous", json={"task": task, "mcp_servers": ["time"]}, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(response)
    kinds = [k for k, _ in events]
    assert kinds[0] == "run.started"
    assert kinds[-1] == "run.completed"
    assert sum(k in ("run.completed", "run.failed") for k in kinds) == 1
    assert kinds.index("tool_call.started") < kinds.index("tool_call.completed")
    assert "round.started" in kinds and "message" in kinds
    assert events[-1][1]["status"] == "completed" and events[-1][1]["steps"][0]["tool"] == "get_current_time"


async def test_first_event_is_sent_before_lmstudio_answers(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    gate = "first-event"
    body = {"task": "slow " + script(hold=gate), "mcp_servers": ["time"], "stream": True}
    async with live.stream("POST", "/v1/autonomous", json=body) as response:
        events = sse_events(response)
        first, _ = await events.__anext__()
        assert first == "run.started"  # while LM Studio cannot have answered: its answer waits at the gate
        await mock.until_held(gate)
        await mock.release(gate)
        rest = [e async for e, _ in events]
    assert rest[-1] == "run.completed"


async def test_errors_before_the_run_are_problems_not_streams(bridge: httpx.AsyncClient) -> None:
    response = await bridge.post("/v1/autonomous", json={"task": "x", "model": "nope", "stream": True})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_mirrors_of_the_original_tools(bridge: httpx.AsyncClient) -> None:
    task = "Time? " + script(calls=[[TIME_CALL]])
    one = (await bridge.post("/v1/autonomous/with-mcp", json={"mcp_name": "time", "task": task})).json()
    assert one["mcp_servers"] == ["time"] and one["steps"][0]["server"] == "time"
    many = await bridge.post("/v1/autonomous/with-multiple-mcps", json={"mcp_names": ["time", "memory"], "task": task})
    assert many.json()["mcp_servers"] == ["time", "memory"]
    discover = (await bridge.post("/v1/autonomous/discover", json={"task": task})).json()
    assert {"time", "filesystem", "memory", "everything", "fault"} <= set(discover["mcp_servers"])
    assert discover["status"] == "completed"
    missing = await bridge.post("/v1/autonomous/with-mcp", json={"mcp_name": "nope", "task": task})
    assert missing.status_code == 422 and missing.json()["code"] == "mcp_server_not_found"


async def test_a_run_on_another_model_acts_on_a_first_runs_output(bridge: httpx.AsyncClient) -> None:
    first = (
        await bridge.post(
            "/v1/autonomous", json={"task": "Analyse X", "model": "mistralai/magistral-small-2509", "mcp_servers": []}
        )
    ).json()
    assert first["model"] == "mistralai/magistral-small-2509"
    second = (
        await bridge.post(
            "/v1/autonomous",
            json={"task": f"Act on: {first['output']}", "model": "qwen/qwen3-coder-30b", "mcp_servers": []},
        )
    ).json()
    assert second["model"] == "qwen/qwen3-coder-30b"
    assert "Analyse X" in second["output"]


async def test_deadline_gives_timeout_with_what_was_gathered(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await bridge.get("/v1/mcp/servers/time/tools")  # started: the deadline below is the run's alone
    # the first chat answers at once, the second never: the deadline falls in round 2, after the time call
    await mock.faults({"kind": "delay", "ms": 0, "path": CHAT}, {"kind": "hang", "path": CHAT})
    body = {"task": "Slow " + script(calls=[[TIME_CALL]]), "mcp_servers": ["time"], "timeout_s": 3.0}
    result = (await bridge.post("/v1/autonomous", json=body)).json()
    assert result["status"] == "timeout"
    assert result["rounds"] == 1 and "UTC" in result["output"]


async def test_model_mismatch_is_reported_and_flagged() -> None:
    async with (
        mock_lmstudio("--pin-loaded-model") as pinned,
        app_client(make_settings(lmstudio_base_url=pinned.base_url, mcp_config=None)) as client,
    ):
        result = (await client.post("/v1/autonomous", json={"task": "hi", "model": "qwen/qwen3-coder-30b"})).json()
    assert result["status"] == "completed"
    assert result["model"] == "qwen/qwen3-4b"  # the model that answered, not the one asked for
    assert any("qwen/qwen3-4b" in w and "qwen/qwen3-coder-30b" in w for w in result["warnings"])


async def test_an_answer_cut_at_max_tokens_ends_length_in_json_and_sse(live: httpx.AsyncClient) -> None:
    body = {"task": "Talk " + script(answer="It is noon. " * 50), "mcp_servers": ["time"], "max_tokens": 8}
    result = (await live.post("/v1/autonomous", json=body)).json()
    assert (result["status"], result["output"]) == ("length", ("It is noon. " * 50)[:32])
    assert any("token limit" in w for w in result["warnings"])
    async with live.stream("POST", "/v1/autonomous", json={**body, "stream": True}) as response:
        events = await read_sse(response)
    assert events[-1][0] == "run.completed" and events[-1][1]["status"] == "length"
    chat = {"messages": [{"role": "user", "content": body["task"]}], "mcp_servers": ["time"], "max_tokens": 8}
    answer = (await live.post("/v1/chat/completions", json=chat)).json()
    assert answer["choices"][0]["finish_reason"] == "length" and answer["bridge_run"]["status"] == "length"
