"""The loop inside a small context window, driven by a fake engine that counts like the mock LM Studio
(ceil(chars / 4) of the JSON of messages and tools) and refuses what does not fit, as a real engine does."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from services.agent import AgentService, RunDefaults, RunSpec
from services.context import ContextWindow
from services.context.fit import ContextPolicy
from services.errors import ContextExceededError
from services.limits import RunLimiter
from services.lmstudio import ChatResult, Usage
from services.mcp import ToolSpec
from services.metrics import Metrics
from tests.services.agent.fakes import FakeCatalog, FakeEngine, FakePool, call, text_result


def count(payload: dict[str, Any]) -> int:
    return math.ceil(len(json.dumps(payload["messages"]) + json.dumps(payload.get("tools") or [])) / 4)


class WindowedEngine(FakeEngine):
    """Answers from a script within an `n_ctx`-token window; a prompt over it is refused (with n_ctx when
    `tells` is set, else as the client reports an empty answer). Records every payload and its token count."""

    def __init__(self, n_ctx: int, *answers: ChatResult | None, tells: bool = True) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.tells = tells
        self.answers = list(answers)
        self.payloads: list[dict[str, Any]] = []
        self.counts: list[int] = []

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        tokens = count(payload)
        self.payloads.append(json.loads(json.dumps(payload)))
        self.counts.append(tokens)
        if tokens + payload.get("max_tokens", 0) > self.n_ctx:
            if not self.tells:  # what the client makes of an empty 200 (services/lmstudio/overflow.py)
                raise ContextExceededError("empty", shape="empty_200")
            raise ContextExceededError("too long", n_ctx=self.n_ctx, n_prompt=tokens, shape="n_keep_400")
        if not self.answers:
            await asyncio.Event().wait()
        scripted = self.answers.pop(0) or ChatResult("done", [], "stop", "m")
        scripted.usage = Usage(tokens, 5, tokens + 5)
        return scripted


def tools(n: int) -> list[ToolSpec]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "iota", "kappa", "lambda"]
    return [
        ToolSpec(
            server="many",
            name=f"tool_{i}",
            description=f"Does {words[i % 10]} things with {words[(i + 3) % 10]} " + "and more " * 30,
            input_schema={"type": "object", "properties": {"x": {"type": "string", "description": "x " * 40}}},
            model_name=f"many__tool_{i}",
        )
        for i in range(n)
    ]


CLOCK = ToolSpec(
    server="time",
    name="get_current_time",
    description="Current time in a timezone (the clock)",
    input_schema={"type": "object", "properties": {"timezone": {"type": "string"}}},
    model_name="time__get_current_time",
)


def agent(
    engine: WindowedEngine, pool: FakePool, window: int, *, max_tokens: int = 256, rounds: int = 20
) -> AgentService:
    defaults = RunDefaults(
        max_rounds=rounds,
        run_timeout_s=30,
        tool_output_max_chars=1_000_000,
        load_timeout_s=None,
        max_tokens=max_tokens,
        repeat_call_limit=100,
        context=ContextPolicy(),
    )
    return AgentService(engine, FakeCatalog(window), pool, RunLimiter(4, 1), defaults, Metrics())


async def run(service: AgentService, task: str, **spec: Any) -> Any:
    opened = await service.open(RunSpec(task=task, **spec))
    return await opened.execute()


def offered(payload: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in payload.get("tools") or []]


async def test_forty_tools_in_a_small_window_offer_the_relevant_ones_and_a_search() -> None:
    pool = FakePool(*tools(40), CLOCK)
    engine = WindowedEngine(3000, ChatResult(None, [call("time__get_current_time", {"timezone": "UTC"}, "c1")]), None)
    result = await run(
        agent(engine, pool, 3000), "What is the current time on the clock?", mcp_servers=["many", "time"]
    )
    assert result.status == "completed"
    first = offered(engine.payloads[0])
    assert "time__get_current_time" in first and "bridge__find_tools" in first and len(first) < 41
    assert all(tokens + 256 <= 3000 for tokens in engine.counts)
    assert [f.action for f in result.context] == ["tools"]
    assert pool.calls == [("time", "get_current_time", {"timezone": "UTC"})]


async def test_a_tool_that_was_not_offered_is_not_run_until_offered() -> None:
    pool = FakePool(*tools(40), CLOCK)
    hidden = "many__tool_39"
    engine = WindowedEngine(
        3000,
        ChatResult(None, [call(hidden, {"x": "1"}, "c1")]),
        ChatResult(None, [call("bridge__find_tools", {"query": "epsilon things"}, "c2")]),
        ChatResult(None, [call(hidden, {"x": "2"}, "c3")]),
        None,
    )
    result = await run(agent(engine, pool, 3000), "What is the time on the clock?", mcp_servers=["many", "time"])
    assert hidden not in offered(engine.payloads[0])
    assert result.steps[0].is_error and "not offered" in result.steps[0].output
    assert hidden in offered(engine.payloads[1])  # offered from the next round on; then called and run
    assert "These tools are offered" in result.steps[1].output
    assert pool.calls == [("many", "tool_39", {"x": "2"})]


async def test_a_huge_output_is_cut_for_the_model_kept_whole_and_readable_in_parts() -> None:
    text = "BEGIN " + "".join(f"line {i:06d}\n" for i in range(30_000)) + " END"  # ~380 KB
    pool = FakePool(CLOCK, results={"get_current_time": text_result(text)})
    engine = WindowedEngine(
        6000,
        ChatResult(None, [call("time__get_current_time", {"timezone": "UTC"}, "big")]),
        ChatResult(None, [call("bridge__read_output", {"tool_call_id": "big", "offset": 200_000, "length": 300}, "r")]),
        None,
    )
    result = await run(agent(engine, pool, 6000), "Read it", mcp_servers=["time"])
    assert result.status == "completed"
    assert result.steps[0].output == text  # the record keeps it whole
    seen = next(m["content"] for m in engine.payloads[1]["messages"] if m["role"] == "tool")
    assert seen.startswith("BEGIN line 000000") and seen.endswith(" END") and len(seen) < 24_000
    assert "bridge__read_output" in offered(engine.payloads[1])
    assert (
        result.steps[1].output.startswith("[characters 200000-200300 of")
        and text[200_000:200_300] in result.steps[1].output
    )
    assert all(tokens + 256 <= 6000 for tokens in engine.counts)


async def test_twelve_rounds_in_a_small_window_keep_every_step_and_each_request_fits() -> None:
    pool = FakePool(CLOCK, results={"get_current_time": text_result("It is 12:00. " * 60)})
    rounds = [
        ChatResult("checking", [call("time__get_current_time", {"timezone": f"Z{i}"}, f"c{i}")]) for i in range(12)
    ]
    engine = WindowedEngine(1600, *rounds, None)
    result = await run(agent(engine, pool, 1600, max_tokens=128), "Twelve times", mcp_servers=["time"])
    assert result.status == "completed" and len(result.steps) == 12
    assert all(tokens + 128 <= 1600 for tokens in engine.counts)
    assert any(f.action == "history" for f in result.context)
    # between compactions each request starts with the previous one's messages (the engine's cache holds)
    compactions = 0
    for before, after in zip(engine.payloads, engine.payloads[1:], strict=False):
        if after["messages"][: len(before["messages"])] != before["messages"]:
            compactions += 1
    assert compactions == sum(1 for f in result.context if f.action == "history")


async def test_an_engine_that_holds_less_than_it_lists_is_learned_and_the_request_fitted_again() -> None:
    pool = FakePool(CLOCK, results={"get_current_time": text_result("tick " * 2000)})
    engine = WindowedEngine(2000, ChatResult(None, [call("time__get_current_time", {}, "c1")]), None)
    service = agent(engine, pool, 8000)  # believed 8000, holds 2000
    result = await run(service, "time", mcp_servers=["time"])
    assert result.status == "completed"
    assert "window" in [f.action for f in result.context]
    assert service.ctx.catalog.window_of("m") == ContextWindow(2000, "learned")


async def test_an_overflow_without_a_window_ends_context_exceeded_never_completed() -> None:
    pool = FakePool(CLOCK, results={"get_current_time": text_result("tick " * 4000)})
    engine = WindowedEngine(2000, ChatResult(None, [call("time__get_current_time", {}, "c1")]), None, tells=False)
    result = await run(agent(engine, pool, 8000), "time", mcp_servers=["time"])
    assert result.status == "context_exceeded" and result.output
    assert any("context window" in w for w in result.warnings)


async def test_a_task_that_cannot_fit_ends_context_exceeded_before_anything_is_sent() -> None:
    engine = WindowedEngine(1000, None)
    result = await run(agent(engine, FakePool(CLOCK), 1000), "x" * 20_000, mcp_servers=["time"])
    assert result.status == "context_exceeded" and engine.payloads == []
