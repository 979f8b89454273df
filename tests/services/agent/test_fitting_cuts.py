"""Cut outputs, against what the real engine showed (tests/real_engine/test_context.py, docs/context.md "Measured").

Both were failures before the fixes they name (what the engine showed):

- A round with two large outputs: seen against llama-server (SmolLM2-135M, `-c 2048`, the filesystem server, a
  211 KB file the model read twice in one round, `head` and `tail`): `fit_outputs` cut each to about 575
  characters, yet the next request was estimated at 1,478 tokens for a 1,433-token budget, and `prepare` then
  ended the run `context_exceeded` ("needs about 1518 tokens") after the tools had run. The same request would
  have been accepted by the engine (1,478 + 512 < 2,048).
- A large output with the default BRIDGE_TOOL_OUTPUT_MAX_CHARS (20,000): the output is truncated to its first
  20,000 characters before it is fitted, and `bridge__read_output` reads that truncated text, so the rest of a
  200 KB file (its last line, asked for by the task) is out of the model's reach, though the record keeps it.
"""

from __future__ import annotations

import json
from typing import Any

from services.agent import AgentService, RunDefaults
from services.context import TokenCounter
from services.context.fit import ContextPolicy
from services.errors import ContextExceededError
from services.limits import RunLimiter
from services.lmstudio import ChatResult, Usage
from services.metrics import Metrics
from tests.services.agent.fakes import FakeCatalog, FakePool, call, text_result
from tests.services.agent.test_fitting import CLOCK, WindowedEngine, run, tools

FILE = "".join(
    f"line {i:05d}: the quick brown fox jumps over the lazy dog while measuring context windows\n" for i in range(2400)
)


class TokenizerLikeEngine(WindowedEngine):
    """Counts as SmolLM2's tokenizer did on these requests: within 2 % of the gateway's uncalibrated estimate
    (estimated 814, counted 802 for the first request), i.e. the estimate itself."""

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        tokens = TokenCounter().count(payload["messages"], payload.get("tools") or [])
        self.payloads.append(json.loads(json.dumps(payload)))
        self.counts.append(tokens)
        if tokens + payload.get("max_tokens", 0) > self.n_ctx:
            raise ContextExceededError("too long", n_ctx=self.n_ctx, n_prompt=tokens, shape="n_keep_400")
        scripted = self.answers.pop(0) or ChatResult("done", [], "stop", "m")
        scripted.usage = Usage(tokens, 5, tokens + 5)
        return scripted


def service(engine: WindowedEngine, pool: FakePool, window: int) -> AgentService:
    """The gateway's defaults: max_tokens 2048 (clamped to a quarter of the window), outputs cut at 20,000."""
    defaults = RunDefaults(
        max_rounds=5,
        run_timeout_s=30,
        tool_output_max_chars=20_000,
        load_timeout_s=None,
        max_tokens=2048,
        repeat_call_limit=100,
        context=ContextPolicy(),
    )
    return AgentService(engine, FakeCatalog(window), pool, RunLimiter(4, 1), defaults, Metrics())


async def test_two_large_outputs_of_one_round_fit_a_2048_window() -> None:
    pool = FakePool(CLOCK, results={"get_current_time": text_result(FILE)})
    calls = [
        call("time__get_current_time", {"timezone": "UTC", "head": 1_000_000}, "BOcyhwPUITdnLfW0fCjBJD4yel2liCXD"),
        call("time__get_current_time", {"timezone": "UTC", "tail": 1_000_000}, "Arq5zcWd9M1xJDkuNsN861i7NCgNoeTR"),
    ]
    engine = TokenizerLikeEngine(2048, ChatResult(None, calls), None)
    result = await run(service(engine, pool, 2048), "Read the file and tell me its last line.", mcp_servers=["time"])
    assert result.status == "completed", (result.status, result.warnings, [f.detail for f in result.context])
    assert all(tokens + 512 <= 2048 for tokens in engine.counts)


async def test_the_end_of_a_200_kb_output_is_readable_with_the_default_output_limit() -> None:
    pool = FakePool(CLOCK, results={"get_current_time": text_result(FILE)})
    last = FILE.rindex("line 02399")
    engine = TokenizerLikeEngine(
        2048,
        ChatResult(None, [call("time__get_current_time", {"timezone": "UTC"}, "big")]),
        ChatResult(None, [call("bridge__read_output", {"tool_call_id": "big", "offset": last, "length": 100}, "r")]),
        None,
    )
    result = await run(service(engine, pool, 2048), "Tell me the file's last line.", mcp_servers=["time"])
    assert result.status == "completed"
    assert result.steps[0].output == FILE  # the record keeps it whole (this part holds)
    assert "line 02399" in result.steps[1].output, result.steps[1].output[:200]


async def test_tools_found_by_a_search_still_fit_a_2048_window() -> None:
    """Seen in bench/context at 2k with 15 and 38 tools: the tools a search found were added to the offer without
    fitting it, and the run ended context_exceeded; now the least relevant others make room."""
    pool = FakePool(*tools(40), CLOCK)
    engine = WindowedEngine(
        2048,
        ChatResult(None, [call("bridge__find_tools", {"query": "alpha things"}, "c1")]),
        ChatResult(None, [call("many__tool_0", {"x": "1"}, "c2")]),
        None,
    )
    result = await run(service(engine, pool, 2048), "What is the time on the clock?", mcp_servers=["many", "time"])
    assert result.status == "completed", (result.status, result.warnings)
    assert pool.calls == [("many", "tool_0", {"x": "1"})]


async def test_a_round_of_many_short_outputs_is_never_lengthened_by_a_cut() -> None:
    """Seen in bench.before_after (a round of 48 `fault.echo` calls, outputs of 4 characters, 4,096 tokens): with
    little room left every output was "cut" to MIN_CUT_CHARS and a marker, up to 40 times its size (the fit said
    "4 characters cut to 165"), which made the overflow certain. An output no longer than its cut stays whole and
    no fit is recorded; here the whole outputs do not fit either, and the run says so."""
    pool = FakePool(CLOCK, results={"get_current_time": text_result("12:00 UTC, " * 12)})
    calls = [call("time__get_current_time", {"timezone": f"Etc/GMT+{i % 12}"}, f"c{i}") for i in range(30)]
    engine = WindowedEngine(2048, ChatResult(None, calls), None)
    result = await run(service(engine, pool, 2048), "What time is it in thirty zones?", mcp_servers=["time"])
    assert [fit.detail for fit in result.context if fit.action == "output"] == []
    assert result.status == "context_exceeded"
    assert len(engine.payloads) == 1  # nothing over the window was sent
