"""Multi-model pipelines (issue 20): POST /v1/pipelines, POST /v1/runs with `steps`, the MCP tool
`autonomous_pipeline`; validation before anything runs, stop/continue, streaming, stored replay,
unload_after, cancel and approvals inside a step. Everything runs against the mock LM Studio and the
real MCP servers of tests/helpers.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mtypes
import pytest

from tests.conftest import CLIENT_TIMEOUT_S, app_client, make_settings, served
from tests.helpers import (
    TIME_CALL,
    Frame,
    assert_problem,
    call,
    events_of,
    eventually,
    finished,
    frames,
    read_sse,
    record,
    script,
    start_run,
)
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio

pytestmark = pytest.mark.timeout(120)

CHAT = "/v1/chat/completions"
SMALL = "qwen/qwen3-4b"  # loaded in the mock from the start
CODER = "qwen/qwen3-coder-30b"  # not loaded: LM Studio (the mock) loads it on demand (JIT)
TIME = "time__get_current_time"
READ_TOOLS = ["filesystem__read_text_file", "filesystem__list_directory"]
WRITE_TOOLS = ["filesystem__write_file", "filesystem__create_directory"]
TERMINAL = {"run.completed", "run.failed"}
# the mock's next LM Studio chat answers at once, the one after never (until its client goes away)
ANSWER_THEN_HANG = ({"kind": "delay", "ms": 0, "path": CHAT}, {"kind": "hang", "path": CHAT})


# --- helpers ------------------------------------------------------------------------------------------


def tool_names(request: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in request["body"].get("tools") or []}


def user_text(request: dict[str, Any]) -> str:
    [user] = [m for m in request["body"]["messages"] if m["role"] == "user"][:1]
    return str(user["content"])


def usage_sum(stages: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {k: sum(s["result"]["usage"][k] for s in stages) for k in keys}


def time_step(name: str, model: str = SMALL, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "mcp_servers": ["time"], **extra}


# --- 1. two models, two tool sets ---------------------------------------------------------------------


async def test_analyse_then_act_with_two_models(live: httpx.AsyncClient, mock: MockLMStudio, files: Path) -> None:
    notes = files / f"notes-{uuid.uuid4().hex[:8]}.txt"
    notes.write_text("PLAN-ALPHA-7: rename foo to bar")
    target = files / f"result-{uuid.uuid4().hex[:8]}.txt"
    read = call("filesystem__read_text_file", {"path": str(notes)})
    write = call("filesystem__write_file", {"path": str(target), "content": "foo renamed to bar"})
    body = {
        "task": "Study the notes " + script(calls=[[read]]),
        "steps": [
            {"name": "analyse", "model": SMALL, "mcp_servers": ["filesystem"], "allowed_tools": READ_TOOLS},
            {
                "name": "act",
                "model": CODER,
                "mcp_servers": ["filesystem"],
                "allowed_tools": WRITE_TOOLS,
                "instruction": "Carry out this plan: {steps.analyse.output} " + script(calls=[[write]]),
            },
        ],
    }
    response = await live.post("/v1/pipelines", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed", result
    assert result["ended_by"] is None
    assert target.read_text() == "foo renamed to bar"  # the coding step wrote the file

    # every step's record, in order, with its own steps and usage
    assert [(s["index"], s["name"]) for s in result["stages"]] == [(1, "analyse"), (2, "act")]
    analyse, act = (s["result"] for s in result["stages"])
    assert analyse["status"] == act["status"] == "completed"
    assert analyse["model"] == SMALL and act["model"] == CODER
    assert [s["name"] for s in analyse["steps"]] == ["filesystem__read_text_file"]
    assert [s["name"] for s in act["steps"]] == ["filesystem__write_file"]
    assert "PLAN-ALPHA-7" in analyse["steps"][0]["output"] and "PLAN-ALPHA-7" in analyse["output"]
    assert not act["steps"][0]["is_error"], act["steps"][0]
    assert analyse["usage"]["total_tokens"] > 0 and act["usage"]["total_tokens"] > 0
    assert result["usage"] == usage_sum(result["stages"])
    assert result["steps"] == analyse["steps"] + act["steps"]
    assert result["rounds"] == analyse["rounds"] + act["rounds"] == 2
    assert result["output"] == act["output"] and result["model"] == CODER

    # what the mock saw: each step's requests with its own model and only its own tools
    requests = await mock.chat_requests()
    assert [r["body"]["model"] for r in requests] == [SMALL, SMALL, CODER, CODER]
    for r in requests[:2]:
        assert tool_names(r) == set(READ_TOOLS), tool_names(r)
    for r in requests[2:]:
        assert tool_names(r) == set(WRITE_TOOLS), tool_names(r)
    # step 2's instruction carries step 1's output
    instruction = user_text(requests[2])
    assert instruction.startswith("Carry out this plan: ") and analyse["output"] in instruction
    assert "PLAN-ALPHA-7" in instruction
    assert "Study the notes" not in instruction  # {task} was not asked for


async def test_step_fields_default_to_the_request_and_previous_output(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    """A step leaves out model/servers/instruction: the request's values, {task} then {previous_output}."""
    body = {
        "task": "Say it " + script(answer="FIRST-ANSWER"),
        "model": CODER,
        "mcp_servers": ["time"],
        "steps": [{}, {"name": "second"}],
    }
    response = await live.post("/v1/pipelines", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [s["name"] for s in result["stages"]] == ["step1", "second"]
    requests = await mock.chat_requests()
    assert [r["body"]["model"] for r in requests] == [CODER, CODER]
    assert all(TIME in tool_names(r) and all(t.startswith("time__") for t in tool_names(r)) for r in requests)
    assert "Say it" in user_text(requests[0])
    assert user_text(requests[1]) == "FIRST-ANSWER"  # {previous_output}
    assert result["output"] == "Mock answer to: FIRST-ANSWER"


# --- 2. everything is checked before anything runs ----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/pipelines", "/v1/runs"])
async def test_a_bad_model_in_step_2_is_refused_before_step_1_runs(
    live: httpx.AsyncClient, mock: MockLMStudio, path: str
) -> None:
    body = {
        "task": "Time " + script(calls=[[TIME_CALL]]),
        "steps": [time_step("analyse"), time_step("act", model="nope/not-a-model")],
    }
    found = assert_problem(await live.post(path, json=body), 422, "model_not_found")
    assert found["step"] == 2 and found["step_name"] == "act"
    assert found["detail"].startswith("step 2 ('act'): "), found["detail"]
    assert found["model"] == "nope/not-a-model" and SMALL in found["available_models"]
    assert await mock.chat_requests() == []  # no step ran


async def test_an_unknown_server_names_its_step(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body = {"task": "x", "steps": [{"name": "look", "mcp_servers": ["nope"]}, time_step("act")]}
    found = assert_problem(await live.post("/v1/pipelines", json=body), 422, "mcp_server_not_found")
    assert found["step"] == 1 and found["step_name"] == "look"
    assert found["detail"].startswith("step 1 ('look'): ") and "time" in found["available_servers"]
    # a tool the step's servers do not have
    body = {"task": "x", "steps": [time_step("a"), time_step("b", allowed_tools=["time__nope"])]}
    found = assert_problem(await live.post("/v1/pipelines", json=body), 422, "validation_error")
    assert found["step"] == 2 and found["step_name"] == "b" and found["unknown_tools"] == ["time__nope"]
    assert await mock.chat_requests() == []


@pytest.mark.parametrize(
    ("steps", "step"),
    [
        ([{"name": "a", "instruction": "{steps.b.output}"}, {"name": "b"}], 1),  # a later step
        ([{"name": "a"}, {"name": "b", "instruction": "{steps.ghost.output}"}], 2),  # no such step
        ([{"name": "a"}, {"name": "b", "instruction": "{steps.b.output}"}], 2),  # itself
        ([{"name": "same"}, {"name": "same"}], 2),  # duplicate names
        ([{"name": "step2"}, {}], 2),  # a default name taken by an earlier step
    ],
)
async def test_bad_step_references_and_names(
    live: httpx.AsyncClient, mock: MockLMStudio, steps: list[dict[str, Any]], step: int
) -> None:
    body = {"task": "x", "mcp_servers": ["time"], "steps": steps}
    found = assert_problem(await live.post("/v1/pipelines", json=body), 422, "validation_error")
    assert found["step"] == step, found
    assert found["detail"].startswith(f"step {step}"), found["detail"]
    assert_problem(await live.post("/v1/runs", json=body), 422, "validation_error")
    assert await mock.chat_requests() == []


@pytest.mark.parametrize(
    "steps",
    [[], [{"name": "bad name!"}], [{"on_failure": "retry"}], [{"unexpected": 1}], [{"max_rounds": 0}]],
)
async def test_malformed_steps_are_422(live: httpx.AsyncClient, mock: MockLMStudio, steps: list[Any]) -> None:
    body = {"task": "x", "steps": steps}
    assert_problem(await live.post("/v1/pipelines", json=body), 422, "validation_error")
    assert_problem(await live.post("/v1/runs", json=body), 422, "validation_error")
    assert await mock.chat_requests() == []


# --- 3. a cut step stops the pipeline, unless it says continue ----------------------------------------


def cut_then_more(on_failure: str) -> dict[str, Any]:
    return {
        "task": "Write a lot " + script(answer="x" * 400),
        "mcp_servers": ["time"],
        "steps": [
            {"name": "cut", "model": SMALL, "max_tokens": 5, "on_failure": on_failure},
            {"name": "after", "model": CODER},
        ],
    }


async def test_a_step_ending_length_stops_the_pipeline(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    response = await live.post("/v1/pipelines", json=cut_then_more("stop"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "length" and result["ended_by"] == "cut"
    assert [s["name"] for s in result["stages"]] == ["cut"]
    assert result["stages"][0]["result"]["status"] == "length"
    assert result["output"] == "x" * 20 == result["stages"][0]["result"]["output"]  # cut at 5 tokens
    assert any(w.startswith("step 1 ('cut'): The model hit its token limit") for w in result["warnings"])
    requests = await mock.chat_requests()
    assert [r["body"]["model"] for r in requests] == [SMALL]  # step 2 never asked its model
    assert requests[0]["body"]["max_tokens"] == 5


async def test_on_failure_continue_goes_on(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    response = await live.post("/v1/pipelines", json=cut_then_more("continue"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert [(s["name"], s["result"]["status"]) for s in result["stages"]] == [("cut", "length"), ("after", "completed")]
    # Pipeline._loop: the pipeline ends with the status and output of its last step, no step "ended" it,
    # and a warning says the cut step was passed over
    assert result["status"] == "completed" and result["ended_by"] is None
    assert "step 1 ('cut') ended length; the pipeline went on (on_failure)" in result["warnings"], result["warnings"]
    assert result["output"] == "Mock answer to: " + "x" * 20 == result["stages"][1]["result"]["output"]
    requests = await mock.chat_requests()
    assert [r["body"]["model"] for r in requests] == [SMALL, CODER]
    assert user_text(requests[1]) == "x" * 20  # the cut output fed the next step
    assert result["usage"] == usage_sum(result["stages"])


# --- 4. streaming and the stored pipeline -------------------------------------------------------------


def two_time_steps(hold: str | None = None) -> dict[str, Any]:
    """A pipeline of two steps calling the time server; with `hold`, step 1's LM Studio answers wait at that
    gate of the mock."""
    first = script(calls=[[TIME_CALL]], hold=hold) if hold else script(calls=[[TIME_CALL]])
    second = call(TIME, {"timezone": "Asia/Tokyo"})
    return {
        "task": "What time is it? " + first,
        "steps": [
            time_step("analyse"),
            time_step("act", model=CODER, instruction="Now Tokyo: {previous_output} " + script(calls=[[second]])),
        ],
    }


def check_step_events(kinds: list[tuple[str, dict[str, Any]]]) -> None:
    """step.started / the step's events (each with `stage`) / step.completed per step; one terminal event."""
    names = [k for k, _ in kinds]
    assert names[0] == "run.started" and "stage" not in kinds[0][1]
    assert names[-1] == "run.completed" and sum(n in TERMINAL for n in names) == 1
    assert names.count("step.started") == names.count("step.completed") == 2
    current: int | None = None
    for name, data in kinds[1:-1]:
        if name == "step.started":
            assert current is None, "a step started inside another"
            current = data["stage"]
            continue
        assert current is not None, f"{name} outside any step"
        if name == "step.completed":
            assert data["stage"] == current and data["result"]["index"] == current
            current = None
            continue
        assert data["stage"] == current and data["stage_name"] == ["analyse", "act"][current - 1], (name, data)
    assert current is None


async def test_streaming_wraps_each_steps_events(live: httpx.AsyncClient) -> None:
    async with live.stream("POST", "/v1/pipelines", json={**two_time_steps(), "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(response)
    check_step_events(events)
    started = [d for k, d in events if k == "step.started"]
    assert started == [
        {"stage": 1, "name": "analyse", "model": SMALL, "mcp_servers": ["time"]},
        {"stage": 2, "name": "act", "model": CODER, "mcp_servers": ["time"]},
    ]
    per_step = {k for k, d in events if d.get("stage") == 1}
    assert {"round.started", "tool_call.started", "tool_call.completed", "message"} <= per_step
    final = events[-1][1]
    completed = [d["result"] for k, d in events if k == "step.completed"]
    assert final["stages"] == completed and final["status"] == "completed"
    zones = [s["arguments"]["timezone"] for s in final["steps"]]
    assert zones == ["UTC", "Asia/Tokyo"]


async def test_a_stored_pipeline_replays_and_resumes(live: httpx.AsyncClient) -> None:
    run_id = await start_run(live, **two_time_steps())
    rec = await finished(live, run_id)
    assert rec["status"] == "completed" and rec["ended_by"] is None
    assert [s["name"] for s in rec["stages"]] == ["analyse", "act"]
    assert [s["result"]["model"] for s in rec["stages"]] == [SMALL, CODER]
    assert [s["arguments"]["timezone"] for s in rec["steps"]] == ["UTC", "Asia/Tokyo"]
    options = rec["options"]["steps"]
    assert [(o["name"], o["model"], o["mcp_servers"]) for o in options] == [
        ("analyse", SMALL, ["time"]),
        ("act", CODER, ["time"]),
    ]
    assert options[0]["instruction"] == "{task}" and options[1]["instruction"].startswith("Now Tokyo: ")

    everything = await events_of(live, run_id)
    n = len(everything)
    assert [f.id for f in everything] == list(range(1, n + 1))
    check_step_events([(f.event, f.data) for f in everything])
    final = everything[-1].data
    assert final["run_id"] == run_id and final["stages"] == rec["stages"] and final["steps"] == rec["steps"]
    assert final["usage"] == rec["usage"] == usage_sum(rec["stages"])
    for k in (0, 1, 2, n // 2, n - 1, n):
        assert await events_of(live, run_id, headers={"Last-Event-ID": str(k)}) == everything[k:], k


async def test_a_live_pipeline_stream_resumes_after_last_event_id(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    run_id = await start_run(live, **two_time_steps(hold="resume"))
    async with live.stream("GET", f"/v1/runs/{run_id}/events") as response:
        stream = frames(response)
        first = [await anext(stream), await anext(stream), await anext(stream)]
    assert [f.id for f in first] == [1, 2, 3]
    assert [f.event for f in first] == ["run.started", "step.started", "run.started"]
    assert (await record(live, run_id))["status"] == "running"  # step 1 waits for LM Studio at the gate
    await mock.release("resume")
    rest = await events_of(live, run_id, headers={"Last-Event-ID": "3"})
    union = first + rest
    assert [f.id for f in union] == list(range(1, len(union) + 1))  # every event exactly once
    assert rest[-1].event == "run.completed" and rest[-1].data["status"] == "completed"
    assert union == await events_of(live, run_id)


# --- 5. the MCP front door ----------------------------------------------------------------------------


async def test_mcp_tool_autonomous_pipeline(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    steps = two_time_steps()["steps"]
    updates: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(message or "")

    async with http_session(live) as session:
        result = await session.call_tool(
            "autonomous_pipeline",
            {"task": two_time_steps()["task"], "steps": steps},
            progress_callback=on_progress,
        )
    text = "\n".join(b.text for b in result.content if isinstance(b, mtypes.TextContent))
    assert not result.is_error, text
    data = result.structured_content
    assert data is not None and data["status"] == "completed" and text == data["output"]
    assert [s["name"] for s in data["stages"]] == ["analyse", "act"]
    assert [s["result"]["model"] for s in data["stages"]] == [SMALL, CODER]
    assert [s["arguments"]["timezone"] for s in data["steps"]] == ["UTC", "Asia/Tokyo"]
    assert f"step 1 (analyse): model {SMALL}" in updates and f"step 2 (act): model {CODER}" in updates
    assert "step 2 (act) ended: completed" in updates
    assert [r["body"]["model"] for r in await mock.chat_requests()] == [SMALL, SMALL, CODER, CODER]

    async with http_session(live) as session:
        bad = await session.call_tool(
            "autonomous_pipeline", {"task": "x", "steps": [{"name": "a"}, {"name": "b", "model": "nope/nope"}]}
        )
    assert bad.is_error and bad.structured_content is not None
    assert bad.structured_content["code"] == "model_not_found" and bad.structured_content["step"] == 2


# --- 6. unload_after -----------------------------------------------------------------------------------


async def loaded_instances(mock: MockLMStudio) -> dict[str, list[str]]:
    response = await mock.client.get("/api/v1/models")
    return {m["key"]: [i["id"] for i in m["loaded_instances"]] for m in response.json()["models"]}


async def test_unload_after_frees_each_steps_model(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    before = await loaded_instances(mock)
    assert before[SMALL] == [SMALL] and before[CODER] == []
    body = {
        "task": "Hi " + script(answer="first"),
        "mcp_servers": ["time"],
        "steps": [
            {"name": "a", "model": SMALL, "unload_after": True},
            {"name": "b", "model": CODER, "unload_after": True, "instruction": "Then {previous_output}"},
        ],
    }
    response = await live.post("/v1/pipelines", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed" and result["warnings"] == [], result["warnings"]
    after = await loaded_instances(mock)
    assert after[SMALL] == [] and after[CODER] == []  # both freed
    log = [(r["path"], r["body"]) for r in await mock.requests() if r["path"] in (CHAT, "/api/v1/models/unload")]
    assert [(p, b.get("model") if p == CHAT else b) for p, b in log] == [
        (CHAT, SMALL),
        ("/api/v1/models/unload", {"instance_id": SMALL}),  # step 1's model, before step 2 began
        (CHAT, CODER),
        ("/api/v1/models/unload", {"instance_id": CODER}),
    ]
    listed = {m["id"]: m for m in (await live.get("/v1/models")).json()["data"]}
    assert listed[SMALL]["state"] == "not-loaded", listed[SMALL]  # the gateway's model list was refreshed


async def test_unload_after_without_the_rest_api_is_a_warning(mcp_json: Path) -> None:
    async with (
        mock_lmstudio("--api", "v0") as older,
        app_client(make_settings(lmstudio_base_url=older.base_url, mcp_config=str(mcp_json))) as gateway,
    ):
        body = {"task": "Hi", "mcp_servers": ["time"], "steps": [{"name": "a", "model": SMALL, "unload_after": True}]}
        response = await gateway.post("/v1/pipelines", json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["status"] == "completed"
        [warning] = result["warnings"]
        assert warning.startswith(f"step 'a': the model {SMALL!r} was not unloaded: ") and "REST API" in warning
        assert not any(r["path"].endswith("/unload") for r in await older.requests())
        states = {m["id"]: m["state"] for m in (await older.client.get("/api/v0/models")).json()["data"]}
        assert states[SMALL] == "loaded"


# --- 7. cancel ------------------------------------------------------------------------------------------


async def test_cancel_a_pipeline_mid_step(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body: dict[str, Any] = {
        "task": "Slowly " + script(answer="never", hold="never"),  # step 1 is answered never
        "mcp_servers": ["time"],
        "steps": [{"name": "slow", "model": SMALL}, {"name": "later", "model": CODER}],
    }
    run_id = await start_run(live, **body)

    async def asked() -> bool:
        return len(await mock.chat_requests()) == 1

    await eventually(asked, 10, "step 1's call to LM Studio")
    cancelling = await live.post(f"/v1/runs/{run_id}/cancel")
    assert cancelling.status_code == 202, cancelling.text
    rec = await finished(live, run_id, within_s=10)
    assert rec["status"] == "cancelled"
    assert rec["output"].startswith("The run was cancelled.")
    requests = await mock.chat_requests()
    assert [r["body"]["model"] for r in requests] == [SMALL]  # the later step never ran
    events = await events_of(live, run_id)
    kinds = [f.event for f in events]
    assert kinds.count("step.started") == 1 and sum(k in TERMINAL for k in kinds) == 1
    assert events[-1].event == "run.completed" and events[-1].data["status"] == "cancelled"
    again = await live.post(f"/v1/runs/{run_id}/cancel")
    assert_problem(again, 409, "run_finished")


async def test_a_cancelled_step_keeps_what_it_gathered(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    """A plain run cancelled after a tool call keeps the call in `steps` and its output; so must a pipeline
    whose step is cancelled after a tool call (its record, events and result must agree)."""
    body: dict[str, Any] = {
        "task": "Slowly " + script(calls=[[TIME_CALL]]),
        "mcp_servers": ["time"],
        "steps": [{"name": "slow", "model": SMALL}, {"name": "later", "model": CODER}],
    }
    await mock.faults(*ANSWER_THEN_HANG)  # step 1 calls the tool, then waits for LM Studio until cancelled
    run_id = await start_run(live, **body)
    async with live.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in frames(response):
            if frame.event == "tool_call.completed":
                break
    assert (await live.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    rec = await finished(live, run_id, within_s=10)
    assert rec["status"] == "cancelled"
    final = (await events_of(live, run_id))[-1]
    assert final.event == "run.completed"
    assert [s["name"] for s in rec["steps"]] == [TIME]  # rebuilt from the stored tool_call.completed events
    assert [s["name"] for s in final.data["steps"]] == [TIME], final.data  # the pipeline's own result
    assert "No tool results were gathered" not in final.data["output"], final.data["output"]
    assert final.data["usage"]["total_tokens"] > 0


async def test_a_pipeline_timing_out_keeps_what_its_step_gathered(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    """A plain run that reaches its deadline after a tool call reports the call (`steps`, output); a one-step
    pipeline doing the same must too."""
    body = {"task": "Slowly " + script(calls=[[TIME_CALL]]), "mcp_servers": ["time"], "timeout_s": 3}
    await mock.faults(*ANSWER_THEN_HANG)  # the deadline falls while the second LM Studio call waits
    plain = (await live.post("/v1/autonomous", json=body)).json()
    assert plain["status"] == "timeout" and [s["name"] for s in plain["steps"]] == [TIME]
    assert "No tool results were gathered" not in plain["output"]
    await mock.faults(*ANSWER_THEN_HANG)
    response = await live.post("/v1/pipelines", json={**body, "steps": [{"name": "slow"}]})
    assert response.status_code == 200, response.text
    piped = response.json()
    assert piped["status"] == "timeout"
    assert [s["name"] for s in piped["steps"]] == [TIME], piped
    assert "No tool results were gathered" not in piped["output"], piped["output"]
    assert piped["usage"]["total_tokens"] > 0  # the step's first LM Studio call counts


# --- 8. approvals inside a step ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def approvals(mock_server: MockLMStudio, mcp_json: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway where the time server's tools need a person's approval (and runs have 6 s)."""
    settings = make_settings(
        lmstudio_base_url=mock_server.base_url, mcp_config=str(mcp_json), approval_tools=["time__*"], run_timeout_s=6
    )
    async with served(settings, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


async def wait_for_approval(client: httpx.AsyncClient, run_id: str) -> Frame:
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in frames(response):
            if frame.event == "approval.requested":
                return frame
            assert frame.event not in TERMINAL, frame
    raise AssertionError("the events ended before an approval was asked for")


async def test_approval_inside_a_step(approvals: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body: dict[str, Any] = {
        "task": "Time " + script(calls=[[TIME_CALL]]),
        "steps": [time_step("analyse"), {"name": "act", "model": CODER, "mcp_servers": []}],
    }
    run_id = await start_run(approvals, **body)
    asked = await wait_for_approval(approvals, run_id)
    assert asked.data["stage"] == 1 and asked.data["stage_name"] == "analyse" and asked.data["name"] == TIME
    call_id = asked.data["tool_call_id"]

    async def waiting() -> bool:
        return bool((await record(approvals, run_id))["status"] == "awaiting_approval")

    await eventually(waiting, 10, "the pipeline awaiting approval")
    unknown = await approvals.post(f"/v1/runs/{run_id}/approvals/call_9_9", json={"decision": "approve"})
    assert assert_problem(unknown, 404, "approval_not_found").get("awaiting") == [call_id]
    assert all(r["body"]["model"] == SMALL for r in await mock.chat_requests())  # step 2 waits too

    decided = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    assert decided.json() == {"run_id": run_id, "tool_call_id": call_id, "decision": "approve"}
    rec = await finished(approvals, run_id)
    assert rec["status"] == "completed", rec
    assert [s["name"] for s in rec["stages"]] == ["analyse", "act"]
    [step] = rec["steps"]
    assert step["approval"] == "approved" and step["is_error"] is False
    assert rec["stages"][0]["result"]["steps"][0]["approval"] == "approved"
    assert [r["body"]["model"] for r in await mock.chat_requests()] == [SMALL, SMALL, CODER]
    events = await events_of(approvals, run_id)
    [verdict] = [f for f in events if f.event == "approval.decided"]
    assert verdict.data["decision"] == "approved" and verdict.data["stage"] == 1


async def test_waiting_for_approval_does_not_count_against_the_pipelines_deadline(
    approvals: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    """Time spent waiting for a person does not count against a run's deadline (Run.deadline_paused): a plain
    run with 3 s to run is approved only after those 3 s have passed, and completes. The same run as a one-step
    pipeline must complete too."""
    timeout_s = 3.0
    task = "Time " + script(calls=[[TIME_CALL]])
    plain = await start_run(approvals, task=task, mcp_servers=["time"], timeout_s=timeout_s)
    piped = await start_run(approvals, task=task, steps=[time_step("only")], timeout_s=timeout_s)
    plain_call = (await wait_for_approval(approvals, plain)).data["tool_call_id"]
    piped_call = (await wait_for_approval(approvals, piped)).data["tool_call_id"]
    # both runs began before now: their deadlines, had waiting counted, lie before `past_deadline`
    past_deadline = time.monotonic() + timeout_s
    await eventually(lambda: time.monotonic() > past_deadline, 2 * timeout_s, "both runs' unextended deadlines")
    for run_id, call_id in ((plain, plain_call), (piped, piped_call)):
        decided = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
        assert decided.status_code == 200, (run_id, decided.text)
    assert (await finished(approvals, plain))["status"] == "completed"
    rec = await finished(approvals, piped)
    assert rec["status"] == "completed", (rec["status"], rec["output"], rec["warnings"])


async def test_a_step_failing_with_an_error_stops_even_with_continue(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    broken = {"kind": "status", "status": 400, "body": {"error": {"message": "the prompt is broken"}}}
    body = {
        "task": "Go " + script(fault=broken),
        "mcp_servers": ["time"],
        "steps": [{"name": "breaks", "model": SMALL, "on_failure": "continue"}, {"name": "after", "model": CODER}],
    }
    response = await live.post("/v1/pipelines", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "failed" and result["ended_by"] == "breaks"
    [stage] = result["stages"]
    assert stage["name"] == "breaks" and stage["result"]["status"] == "failed"
    assert result["output"] == stage["result"]["output"] and result["output"].startswith("Error: ")
    assert any(w.startswith("step 1 ('breaks') failed: ") for w in result["warnings"]), result["warnings"]
    assert all(r["body"]["model"] == SMALL for r in await mock.chat_requests())  # step 2 never ran


async def test_a_stored_pipeline_says_which_step_ended_it(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    run_id = await start_run(live, **cut_then_more("stop"))
    rec = await finished(live, run_id)
    assert rec["status"] == "length" and rec["ended_by"] == "cut"
    assert [s["name"] for s in rec["stages"]] == ["cut"]
    final = (await events_of(live, run_id))[-1]
    assert final.data["ended_by"] == "cut" and final.data["stages"] == rec["stages"]
    assert [r["body"]["model"] for r in await mock.chat_requests()] == [SMALL]
