"""The aids that lift small models, through /v1/autonomous on the mock LM Studio with real MCP servers: switched on
for every model by settings here, and off for one model by its profile (BRIDGE_AID_PROFILES), which shows each
aid's absence as the default behaviour."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.agent.aids import LOOP_HINT_WARNING, NUDGE_WARNING, AidProfiles, Aids
from services.agent.repair import repair_arguments
from tests.helpers import TIME_CALL, call, script
from tests.mock_lmstudio.fixture import MockLMStudio

AIDED, PLAIN = "qwen/qwen3-4b", "qwen/qwen3-coder-30b"


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"aid_nudge": True, "aid_repair": True, "aid_loop_hint": True, "aid_profiles": {PLAIN: []}}


async def _run(bridge: httpx.AsyncClient, task: str, model: str, servers: list[str]) -> dict[str, Any]:
    response = await bridge.post("/v1/autonomous", json={"task": task, "model": model, "mcp_servers": servers})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_nudge_asks_again_with_tool_choice_required(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "What time is it? " + script(answer="I would use a clock.", required_calls=[[TIME_CALL]])
    aided = await _run(bridge, task, AIDED, ["time"])
    assert aided["status"] == "completed" and [s["tool"] for s in aided["steps"]] == ["get_current_time"]
    assert NUDGE_WARNING in aided["warnings"]
    bodies = [r["body"] for r in await mock.chat_requests()]
    assert [b.get("tool_choice") for b in bodies] == [None, "required", None]
    plain = await _run(bridge, task, PLAIN, ["time"])
    assert (plain["output"], plain["steps"], plain["warnings"]) == ("I would use a clock.", [], [])


async def test_nudge_asks_again_after_prose_cut_at_the_token_limit(bridge: httpx.AsyncClient) -> None:
    task = "Time? " + script(answer="I think that the time is " * 20, required_calls=[[TIME_CALL]])
    body = {"task": task, "model": AIDED, "mcp_servers": ["time"], "max_tokens": 8}
    result = (await bridge.post("/v1/autonomous", json=body)).json()
    assert NUDGE_WARNING in result["warnings"] and [s["tool"] for s in result["steps"]] == ["get_current_time"]


async def test_nudge_leaves_a_call_of_round_one_and_a_request_s_tool_choice_alone(
    bridge: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    result = await _run(bridge, "Time? " + script(calls=[[TIME_CALL]]), AIDED, ["time"])
    assert NUDGE_WARNING not in result["warnings"] and len(result["steps"]) == 1
    body = {"task": "Hi " + script(answer="hello"), "model": AIDED, "mcp_servers": ["time"], "tool_choice": "auto"}
    chosen = (await bridge.post("/v1/autonomous", json=body)).json()
    assert chosen["steps"] == [] and NUDGE_WARNING not in chosen["warnings"]


async def test_repair_wraps_a_single_value_for_an_array_and_records_it(bridge: httpx.AsyncClient) -> None:
    task = "Recall " + script(calls=[[call("memory__open_nodes", {"names": "Nobody"})]])
    aided = (await _run(bridge, task, AIDED, ["memory"]))["steps"][0]
    assert (aided["arguments"], aided["is_error"], aided["arguments_coerced"]) == ({"names": ["Nobody"]}, False, True)
    plain = (await _run(bridge, task, PLAIN, ["memory"]))["steps"][0]
    assert plain["is_error"] and plain["output"].startswith("Error: the arguments") and not plain["arguments_coerced"]


async def test_arguments_coerced_marks_a_change_only_and_comes_without_the_aid_too(bridge: httpx.AsyncClient) -> None:
    task = "Add " + script(
        calls=[
            [call("time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"})]
        ]
    )
    step = (await _run(bridge, task, PLAIN, ["time"]))["steps"][0]
    assert not step["is_error"] and not step["arguments_coerced"]  # nothing to repair: not marked
    blank = "Graph " + script(calls=[[call("memory__read_graph", "")]])  # no arguments written: {} is no repair
    step = (await _run(bridge, blank, AIDED, ["memory"]))["steps"][0]
    assert (step["arguments"], step["is_error"], step["arguments_coerced"]) == ({}, False, False)
    numbers = "Tree " + script(calls=[[call("filesystem__read_text_file", {"path": "hello.txt", "head": "1"})]])
    step = (await _run(bridge, numbers, PLAIN, ["filesystem"]))["steps"][0]
    assert (step["arguments"]["head"], step["is_error"], step["arguments_coerced"]) == (1, False, True)


async def test_loop_hint_tells_the_model_once_before_the_run_ends_loop(
    bridge: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    task = "Loop " + script(forever=TIME_CALL)
    aided = await _run(bridge, task, AIDED, ["time"])
    assert (aided["status"], aided["rounds"], len(aided["steps"])) == ("loop", 3, 3)
    hint = aided["steps"][2]
    assert hint["is_error"] and hint["server"] is None and "same arguments 3 times" in hint["output"]
    assert '"timezone": "UTC"' in hint["output"] or "UTC" in hint["output"]
    assert LOOP_HINT_WARNING in aided["warnings"]
    tool_messages = [m for m in (await mock.chat_requests())[3]["body"]["messages"] if m["role"] == "tool"]
    assert tool_messages[-1]["content"].startswith("Error: you have called time__get_current_time")
    plain = await _run(bridge, task, PLAIN, ["time"])
    assert (plain["status"], plain["rounds"], len(plain["steps"])) == ("loop", 2, 2)


def test_repair_is_unambiguous_only() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "integer"}},
            "unit": {"type": "string", "enum": ["Celsius", "Fahrenheit"]},
            "mode": {"type": "string", "enum": ["a", "A"]},
            "inner": {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}}},
        },
    }
    args = {"tags": 5, "unit": "celsius", "mode": "a", "inner": {"ids": "x"}, "other": "kept"}
    assert repair_arguments(schema, args) == {
        "tags": [5],
        "unit": "Celsius",
        "mode": "a",
        "inner": {"ids": ["x"]},
        "other": "kept",
    }
    assert repair_arguments(schema, {"mode": "b", "unit": "kelvin"}) == {"mode": "b", "unit": "kelvin"}


def test_profiles_pick_a_model_s_aids_else_the_defaults() -> None:
    profiles = AidProfiles(Aids(nudge=True), {"small": Aids.of(["repair", "loop_hint"])})
    assert profiles.for_model("small").names == ["repair", "loop_hint"]
    assert profiles.for_model("other").names == ["nudge"]
    with pytest.raises(ValueError, match="unknown aid"):
        Aids.of(["nudge", "magic"])


def test_aid_profiles_setting_reads_model_equals_aids() -> None:
    from pydantic import ValidationError

    from tests.conftest import make_settings

    settings = make_settings(aid_profiles="small/model=nudge+repair, big/model=")
    assert settings.aid_profiles == {"small/model": ["nudge", "repair"], "big/model": []}
    with pytest.raises(ValidationError, match="unknown aid"):
        make_settings(aid_profiles="m=nudge+magic")
