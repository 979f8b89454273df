"""The agent loop's rules, one by one, driven by fakes: no HTTP, no subprocess."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.agent import AgentService, RunDefaults, RunSpec
from services.errors import MCPServerUnavailableError
from services.limits import RunLimiter
from services.lmstudio import ChatResult, ToolCall, Usage
from services.mcp import ToolSpec
from services.metrics import Metrics
from tests.helpers import eventually
from tests.services.agent.fakes import FakeCatalog, FakeLMStudio, FakePool, answer, call, text_result

SCHEMA = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}
TIME = ToolSpec(
    server="time",
    name="get_current_time",
    description="Current time",
    input_schema=SCHEMA,
    model_name="time__get_current_time",
)
ECHO = ToolSpec(
    server="fault", name="echo", description="Echo", input_schema={"type": "object"}, model_name="fault__echo"
)


def service(lmstudio: FakeLMStudio, pool: FakePool, *, max_rounds: int = 10, timeout_s: float = 30) -> AgentService:
    defaults = RunDefaults(
        max_rounds=max_rounds,
        run_timeout_s=timeout_s,
        tool_output_max_chars=1000,
        load_timeout_s=None,
        max_tokens=256,
        repeat_call_limit=3,
    )
    return AgentService(lmstudio, FakeCatalog(), pool, RunLimiter(4, 1), defaults, Metrics())


async def run(lmstudio: FakeLMStudio, pool: FakePool, **spec: Any) -> Any:
    spec.setdefault("mcp_servers", pool.names())
    agent = service(lmstudio, pool)
    opened = await agent.open(RunSpec(task="what time is it?", **spec))
    return await opened.execute()


def tool_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in payload["messages"] if m["role"] == "tool"]


async def test_an_answer_without_tool_calls_completes_the_run() -> None:
    lm = FakeLMStudio(answer("It is noon."))
    result = await run(lm, FakePool(TIME))
    assert (result.status, result.output, result.rounds, result.steps) == ("completed", "It is noon.", 0, [])
    assert lm.payloads[0]["tools"][0]["function"]["name"] == "time__get_current_time"
    assert result.usage.total_tokens == 15


async def test_tool_results_go_back_as_tool_messages_after_the_assistant_message() -> None:
    first = call("time__get_current_time", {"timezone": "UTC"}, "c1")
    lm = FakeLMStudio(answer("Let me check.", first), answer("It is noon."))
    pool = FakePool(TIME)
    result = await run(lm, pool)
    assert result.status == "completed" and result.rounds == 1
    assert pool.calls == [("time", "get_current_time", {"timezone": "UTC"})]
    messages = lm.payloads[1]["messages"]
    assistant, tool = messages[-2], messages[-1]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "c1"
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": "get_current_time ok"}
    step = result.steps[0]
    assert (step.server, step.tool, step.arguments, step.is_error) == (
        "time",
        "get_current_time",
        {"timezone": "UTC"},
        False,
    )


@pytest.mark.parametrize(
    ("bad_call", "expected"),
    [
        (call("time__get_current_time", '{"timezone": "UT'), "not valid JSON"),
        (call("time__get_current_time", "[1, 2]"), "must be a JSON object"),
        (call("nope__tool", {}), "there is no tool named 'nope__tool'. Available tools: time__get_current_time"),
        (call("time__get_current_time", {"timezone": 7}), "do not match the tool's input schema"),
    ],
    ids=["bad-json", "not-an-object", "unknown-tool", "schema-violation"],
)
async def test_a_bad_call_goes_back_to_the_model_and_the_run_goes_on(bad_call: ToolCall, expected: str) -> None:
    lm = FakeLMStudio(answer(None, bad_call), answer("Sorry, done."))
    pool = FakePool(TIME)
    result = await run(lm, pool)
    assert result.status == "completed" and result.output == "Sorry, done."
    assert pool.calls == []  # nothing reached the server
    assert result.steps[0].is_error and expected in result.steps[0].output
    assert expected in tool_messages(lm.payloads[1])[0]["content"]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (text_result("invalid timezone", is_error=True), "invalid timezone"),
        (MCPServerUnavailableError("MCP server 'time' closed the connection"), "Error: MCP server 'time' closed"),
    ],
    ids=["tool-error", "server-unavailable"],
)
async def test_a_failing_tool_is_reported_to_the_model(outcome: Any, expected: str) -> None:
    lm = FakeLMStudio(answer(None, call("time__get_current_time", {"timezone": "Mars"})), answer("It failed."))
    result = await run(lm, FakePool(TIME, results={"get_current_time": outcome}))
    assert result.status == "completed"
    assert result.steps[0].is_error and expected in result.steps[0].output
    assert expected in tool_messages(lm.payloads[1])[0]["content"]


async def test_calls_of_one_round_run_concurrently() -> None:
    calls = [call("time__get_current_time", {"timezone": tz}, f"c{i}") for i, tz in enumerate(["UTC", "CET", "JST"])]
    lm = FakeLMStudio(answer(None, *calls), answer("three times"))
    pool = FakePool(TIME)
    pool.gate = asyncio.Event()
    running = asyncio.ensure_future(run(lm, pool))
    await eventually(lambda: pool.in_flight == 3, 5, "all three calls in flight before any may finish")
    pool.gate.set()
    result = await running
    assert [s.tool_call_id for s in result.steps] == ["c0", "c1", "c2"]  # in the order the model made the calls
    assert [m["tool_call_id"] for m in tool_messages(lm.payloads[1])] == ["c0", "c1", "c2"]


async def test_after_max_rounds_one_last_call_without_tools_gives_the_answer() -> None:
    loop_call = call("time__get_current_time", {"timezone": "UTC"})
    lm = FakeLMStudio(answer(None, loop_call), answer(None, loop_call), answer("Final: noon."))
    result = await run(lm, FakePool(TIME), max_rounds=2)
    assert (result.status, result.rounds, result.output) == ("max_rounds", 2, "Final: noon.")
    assert len(lm.payloads) == 3
    assert "tools" in lm.payloads[1] and "tools" not in lm.payloads[2]
    assert "Do not call tools" in lm.payloads[2]["messages"][-1]["content"]


async def test_the_final_call_without_text_still_gives_a_non_empty_output() -> None:
    loop_call = call("time__get_current_time", {"timezone": "UTC"})
    lm = FakeLMStudio(answer(None, loop_call), answer(None))
    result = await run(lm, FakePool(TIME), max_rounds=1)
    assert result.status == "max_rounds"
    assert "get_current_time ok" in result.output


async def test_an_unset_max_rounds_takes_the_gateway_default() -> None:
    loop_call = call("time__get_current_time", {"timezone": "UTC"})
    lm = FakeLMStudio(answer(None, loop_call), answer("done"))
    agent = service(lm, FakePool(TIME), max_rounds=1)
    opened = await agent.open(RunSpec(task="t", mcp_servers=["time"]))
    result = await opened.execute()
    assert result.status == "max_rounds" and result.rounds == 1


async def test_the_deadline_ends_a_run_whose_model_does_not_answer() -> None:
    lm = FakeLMStudio(answer(None, call("time__get_current_time", {"timezone": "UTC"})))  # then silence
    result = await run(lm, FakePool(TIME), timeout_s=0.2)
    assert result.status == "timeout"
    assert "deadline" in result.output and "get_current_time ok" in result.output


async def test_calls_of_the_clients_own_tools_are_handed_back_unexecuted() -> None:
    client_tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    lm = FakeLMStudio(
        answer(None, call("lookup", {"q": "x"}, "c9"), call("time__get_current_time", {"timezone": "UTC"}))
    )
    pool = FakePool(TIME)
    result = await run(lm, pool, client_tools=[client_tool])
    assert result.status == "completed" and pool.calls == []
    assert result.tool_calls == [
        {"id": "c9", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    ]
    assert {t["function"]["name"] for t in lm.payloads[0]["tools"]} == {"time__get_current_time", "lookup"}


async def test_allowed_tools_limit_what_the_model_is_offered() -> None:
    lm = FakeLMStudio(answer("ok"))
    await run(lm, FakePool(TIME, ECHO), allowed_tools=["fault__echo"])
    assert [t["function"]["name"] for t in lm.payloads[0]["tools"]] == ["fault__echo"]


async def test_an_answer_cut_at_the_token_limit_ends_the_run_with_status_length() -> None:
    cut = ChatResult("The time is twelve and the time is", [], "length", "m", Usage(10, 256, 266))
    lm = FakeLMStudio(cut)
    result = await run(lm, FakePool(TIME))
    assert (result.status, result.output) == ("length", "The time is twelve and the time is")
    assert any("token limit" in w for w in result.warnings)
    assert lm.payloads[0]["max_tokens"] == 256  # the gateway's default cap


async def test_a_request_max_tokens_overrides_the_default_cap() -> None:
    lm = FakeLMStudio(answer("ok"))
    await run(lm, FakePool(TIME), max_tokens=17)
    assert lm.payloads[0]["max_tokens"] == 17


async def test_the_same_call_repeated_ends_the_run_with_status_loop_after_one_call_without_tools() -> None:
    same = {"timezone": "UTC"}
    lm = FakeLMStudio(*(answer(None, call("time__get_current_time", same)) for _ in range(3)), answer("noon"))
    pool = FakePool(TIME)
    result = await run(lm, pool)
    assert (result.status, result.output, result.rounds) == ("loop", "noon", 2)
    assert len(pool.calls) == 2  # the third identical call is not executed
    assert "tools" not in lm.payloads[-1] and "same tool" in lm.payloads[-1]["messages"][-1]["content"]


async def test_calls_that_differ_are_not_a_loop() -> None:
    answers = [answer(None, call("time__get_current_time", {"timezone": tz})) for tz in ("UTC", "CET", "UTC", "CET")]
    lm = FakeLMStudio(*answers, answer("done"))
    result = await run(lm, FakePool(TIME))
    assert result.status == "completed" and result.rounds == 4


async def test_tool_choice_applies_to_the_first_round_only() -> None:
    first = call("time__get_current_time", {"timezone": "UTC"})
    lm = FakeLMStudio(answer(None, first), answer("noon"))
    await run(lm, FakePool(TIME), tool_choice="required")
    assert lm.payloads[0]["tool_choice"] == "required"
    assert "tool_choice" not in lm.payloads[1]


async def test_tool_choice_none_offers_no_tools() -> None:
    lm = FakeLMStudio(answer("no tools"))
    await run(lm, FakePool(TIME), tool_choice="none")
    assert "tools" not in lm.payloads[0] and "tool_choice" not in lm.payloads[0]


# --- answers cut at the token limit, forced choices (issue 29, item 12) ----------------------------------------


def cut(content: str | None, *calls: ToolCall) -> ChatResult:
    return ChatResult(content, list(calls), "length", "m", Usage(10, 5, 15))


async def test_a_final_answer_cut_at_its_limit_after_max_rounds_ends_length() -> None:
    loop_call = call("time__get_current_time", {"timezone": "UTC"})
    lm = FakeLMStudio(answer(None, loop_call), cut('<tool_response>\n{\n  "timezone": "Asia/Tokyo", "datetime": "2026'))
    result = await run(lm, FakePool(TIME), max_rounds=1)
    assert result.status == "length" and result.output.startswith("<tool_response>")
    assert any("token limit" in w for w in result.warnings)


async def test_a_complete_call_in_an_answer_cut_at_its_limit_is_run() -> None:
    text = (
        '<tool_call>\n{"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>'
        " subtree\n subtree"
    )
    lm = FakeLMStudio(cut(text), answer("It is noon."))
    metrics = Metrics()
    agent = service(lm, FakePool(TIME))
    agent.ctx.metrics = metrics
    result = await (await agent.open(RunSpec(task="time?", mcp_servers=["time"]))).execute()
    assert (result.status, result.output) == ("completed", "It is noon.")
    [step] = result.steps
    assert (step.name, step.recovered_from) == ("time__get_current_time", "hermes")
    assert any("cut at the token limit after complete tool call" in w for w in result.warnings)
    assert metrics.text_tool_calls.labels("hermes")._value.get() == 1


async def test_a_call_cut_in_the_middle_is_not_run_and_stays_visible() -> None:
    text = '<tool_call>\n{"name": "time__get_current_time", "arguments": {"timezone": "Eur'
    lm = FakeLMStudio(cut(text))
    pool = FakePool(TIME)
    metrics = Metrics()
    agent = service(lm, pool)
    agent.ctx.metrics = metrics
    result = await (await agent.open(RunSpec(task="time?", mcp_servers=["time"]))).execute()
    assert (result.status, result.output, result.steps, pool.calls) == ("length", text, [], [])
    assert any("inside a tool call; the call was not run" in w for w in result.warnings)
    assert metrics.text_tool_calls.labels("hermes")._value.get() == 0


async def test_a_required_tool_choice_without_a_call_is_warned() -> None:
    result = await run(FakeLMStudio(answer("I will not call anything.")), FakePool(TIME), tool_choice="required")
    assert result.status == "completed"
    assert any('tool_choice "required"' in w for w in result.warnings)
