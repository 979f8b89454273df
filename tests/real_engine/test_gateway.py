"""The gateway against the real engine (llama-server + SmolLM2-135M) and the real `time` MCP server.

These assert STRUCTURE (shapes, statuses, token accounting, cancellation), never what the tiny model knows.
Token counts are checked against the engine's own: its answers (seen through a recording proxy, recorder.py)
or its Prometheus counters (`llamacpp:tokens_predicted_total`, prompt tokens processed + cached).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import make_settings, served
from tests.helpers import eventually, write_mcp_json
from tests.real_engine.engine import RealEngine
from tests.real_engine.recorder import Recorder, recording_proxy

pytestmark = pytest.mark.real_engine

CLIENT_TIMEOUT_S = 90.0
# the engine's slot must be free this soon after the gateway gives up on a call: llama-server checks for a
# closed connection once a second, and RealEngine.wait_idle polls every 1.1 s
IDLE_WITHIN_S = 3.0
HONEST_END = {"completed", "max_rounds", "loop", "length"}
STORY = "Write a very long story about a cat who lives in Paris."
# SmolLM2-135M never starts a call by itself: an assistant prefill (the last message, continued by the
# engine) starts it inside one, and the stop string ends the answer after the first call (test_engine.py)
PREFILL = {"role": "assistant", "content": "<tool_call>\n"}
# `cache_prompt: false` (llama.cpp): every call reads its whole prompt, so the answer does not depend on what
# the engine's prompt cache holds from earlier tests (with a reused prefix the model may repeat the call until
# max_tokens instead)
ONE_CALL = {"stop": ["</tool_call>"], "cache_prompt": False}
# the Qwen2.5 template's own default system message: with the gateway's longer default prompt instead, this
# model rambles inside the call until max_tokens (finish_reason "length", no stop string reached)
SYSTEM = {"role": "system", "content": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcp_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = tmp_path_factory.mktemp("real-engine-files")
    return write_mcp_json(files.parent / "real-engine-mcp.json", str(files))


@pytest.fixture(scope="module")
async def gateway(real_engine: RealEngine, mcp_config: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway behind a real socket (streams and disconnects are real), its LM Studio = the engine."""
    settings = make_settings(lmstudio_base_url=real_engine.base_url, mcp_config=str(mcp_config), log_level="WARNING")
    async with served(settings, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
async def recorded(real_engine: RealEngine, mcp_config: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    """A gateway whose LM Studio is a recording proxy in front of the engine: what the engine got and said."""
    async with recording_proxy(real_engine.base_url) as (url, recorder):
        settings = make_settings(lmstudio_base_url=url, mcp_config=str(mcp_config), log_level="WARNING")
        async with served(settings, timeout=CLIENT_TIMEOUT_S) as client:
            yield client, recorder


@pytest.fixture
async def idle_engine(real_engine: RealEngine) -> RealEngine:
    """The engine, with no slot busy (a test before may have left a cancelled call winding down)."""
    await real_engine.wait_idle(10, "no engine slot busy before the test")
    return real_engine


def sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", timeout=CLIENT_TIMEOUT_S, max_retries=0)


# --- the engine's own token counts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """The engine's cumulative token counters (prompt = processed + served from its prompt cache)."""

    prompt: int
    completion: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.prompt - other.prompt, self.completion - other.completion)


async def engine_metrics(engine: RealEngine) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in (await engine.metrics_text()).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


async def engine_metric(engine: RealEngine, name: str) -> float:
    return (await engine_metrics(engine))[name]


async def engine_counts(engine: RealEngine) -> Counts:
    values = await engine_metrics(engine)
    prompt = values["llamacpp:prompt_tokens_total"] + values["llamacpp:prompt_tokens_cached_total"]
    return Counts(int(prompt), int(values["llamacpp:tokens_predicted_total"]))


async def assert_engine_counted(engine: RealEngine, before: Counts, usage: dict[str, int]) -> None:
    """The engine's counters grew by exactly `usage` (polled: they are updated as its slot is released)."""
    expected = Counts(usage["prompt_tokens"], usage["completion_tokens"])

    async def grown() -> bool:
        return await engine_counts(engine) - before == expected

    try:
        await eventually(grown, 5, "the engine's token counters to grow by the usage reported")
    except AssertionError:
        raise AssertionError(
            f"engine counted {await engine_counts(engine) - before}, gateway said {expected}"
        ) from None


def assert_consistent(usage: dict[str, int], max_tokens: int | None = None) -> None:
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if max_tokens is not None:
        assert usage["completion_tokens"] <= max_tokens


# --- the model list ------------------------------------------------------------------------------------


async def test_models_lists_the_engine_model_loaded_with_its_context(
    real_engine: RealEngine, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    [model] = body["data"]
    assert model["id"] == real_engine.model_id
    assert model["type"] == "llm"
    assert model["state"] == "loaded"  # llama-server serves exactly what it lists
    # loaded with /props' n_ctx (a slot's share: the whole 4096 with --kv-unified); the most it takes: n_ctx_train
    assert model["loaded_context_length"] == real_engine.context_length == 4096
    assert model["max_context_length"] == 8192  # SmolLM2's n_ctx_train (tests/services/lmstudio/test_listing.py)
    assert model["default"] is True
    assert body["stale"] is False


# --- chat pass-through (the openai SDK) ----------------------------------------------------------------


async def test_chat_through_the_gateway_has_the_engines_usage(
    idle_engine: RealEngine, gateway: httpx.AsyncClient
) -> None:
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": 8,
        "temperature": 0,
    }
    before = await engine_counts(idle_engine)
    via = await sdk(str(gateway.base_url)).chat.completions.create(model="default", **request)
    assert via.usage is not None
    await assert_engine_counted(idle_engine, before, via.usage.model_dump())  # one engine call, no retry
    direct = await sdk(idle_engine.base_url).chat.completions.create(model=idle_engine.model_id, **request)
    assert direct.usage is not None

    assert via.object == "chat.completion"
    assert via.model == idle_engine.model_id  # "default" resolved to the engine's model
    [choice] = via.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == direct.choices[0].finish_reason == "length"
    assert_consistent(via.usage.model_dump(), 8)
    assert (via.usage.prompt_tokens, via.usage.completion_tokens, via.usage.total_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
        direct.usage.total_tokens,
    )


async def test_streamed_chat_through_the_gateway(idle_engine: RealEngine, gateway: httpx.AsyncClient) -> None:
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    before = await engine_counts(idle_engine)
    stream = await sdk(str(gateway.base_url)).chat.completions.create(model="default", **request)
    chunks = [chunk async for chunk in stream]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None  # include_usage: the last chunk
    await assert_engine_counted(idle_engine, before, usage_chunk.usage.model_dump())
    direct_stream = await sdk(idle_engine.base_url).chat.completions.create(model=idle_engine.model_id, **request)
    direct = [chunk async for chunk in direct_stream]

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert_consistent(usage_chunk.usage.model_dump(), 8)
    assert direct[-1].usage is not None
    assert usage_chunk.usage.prompt_tokens == direct[-1].usage.prompt_tokens


# --- a run with real tool calls ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "model_errs"),
    [
        ("What time is it in Paris?", False),  # the model calls get_current_time: a real result
        # the model calls convert_time with a date-time where HH:MM belongs (at temperature 0 without the prompt
        # cache it always does): the server's error must go back to it as a tool message
        ("Convert noon from Paris time to Tokyo time.", True),
    ],
    ids=["get_current_time", "convert_time-bad-arguments"],
)
async def test_run_with_real_tool_calls(
    idle_engine: RealEngine, recorded: tuple[httpx.AsyncClient, Recorder], question: str, model_errs: bool
) -> None:
    client, recorder = recorded
    tools = await client.get("/v1/mcp/servers/time/tools")
    assert tools.status_code == 200, tools.text
    real_tools = {tool["name"] for tool in tools.json()["data"]}
    assert {"get_current_time", "convert_time"} <= real_tools
    recorder.exchanges.clear()
    body = {
        "messages": [SYSTEM, {"role": "user", "content": question}, PREFILL],
        "mcp_servers": ["time"],
        "tool_choice": "required",
        "max_rounds": 2,
        "max_tokens": 128,
        "temperature": 0,
        **ONE_CALL,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    run = answer["bridge_run"]
    exchanges = list(recorder.exchanges)
    _report(question, run, exchanges)

    # an honest end within the round limit, as a chat completion
    assert answer["object"] == "chat.completion"
    assert run["status"] in HONEST_END
    assert run["rounds"] <= 2
    assert answer["choices"][0]["message"]["content"] == (run["output"] or None)
    if run["status"] != "completed":  # cut, or ended by the gateway: never an empty answer
        assert run["output"]
    if run["status"] == "length":
        assert any("token limit" in w for w in run["warnings"])

    # what the engine was asked first: the tools of the time server, the forced call, the prefill last
    first = exchanges[0].request
    assert first["tool_choice"] == "required"
    assert first["messages"][-1] == PREFILL
    assert {t["function"]["name"] for t in first["tools"]} == {f"time__{name}" for name in real_tools}
    assert all("tool_choice" not in ex.request for ex in exchanges[1:])  # the first round only
    assert all(ex.status == 200 for ex in exchanges)
    assert len(exchanges) == run["rounds"] + (2 if run["status"] == "loop" else 1)

    # real steps on the real server, each fed back to the model as a tool message (errors included)
    assert run["rounds"] >= 1 and run["steps"], "the prefilled, forced first round must call a tool"
    for step in run["steps"]:
        assert step["server"] == "time" and step["tool"] in real_tools
        assert step["name"] == f"time__{step['tool']}"
        assert step["output"]
        if step["tool"] == "get_current_time" and not step["is_error"]:
            assert {"timezone", "datetime"} <= set(json.loads(step["output"]))
        later = exchanges[step["round"]].request["messages"]  # the call after round r is exchange r
        assert {"role": "tool", "tool_call_id": step["tool_call_id"], "content": step["output"]} in later
        called = [c["id"] for m in later if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        assert step["tool_call_id"] in called

    if model_errs:
        assert any(step["is_error"] for step in run["steps"]), "the tiny model's bad arguments were expected"

    # usage = the sum of what the engine reported for each call of the run
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert run["usage"][field] == answer["usage"][field] == sum(ex.response["usage"][field] for ex in exchanges)
    assert_consistent(run["usage"])


def _report(question: str, run: dict[str, Any], exchanges: list[Any]) -> None:
    """What the engine and the gateway did (shown with `pytest -s`, and in a failure's captured output)."""
    print(
        f"\n{question!r}: {run['status']} after {run['rounds']} round(s), {run['duration_ms']:.0f} ms, {run['usage']}"
    )
    for step in run["steps"]:
        what = f"{step['name']} {step['arguments']} error={step['is_error']}"
        print(f"  step r{step['round']} {what}: {step['output'][:90]!r}")
    for ex in exchanges:
        choice = ex.response["choices"][0]
        calls = [c["function"]["name"] for c in choice["message"].get("tool_calls") or []]
        print(f"  engine: {choice['finish_reason']} {ex.response['usage']['completion_tokens']} tokens, calls {calls}")
    print(f"  output: {run['output'][:120]!r}; warnings: {run['warnings']}")


# --- /v1/autonomous: token limit, deadline, client gone ------------------------------------------------


async def test_required_with_a_small_token_limit_ends_length(
    idle_engine: RealEngine, gateway: httpx.AsyncClient
) -> None:
    before = await engine_counts(idle_engine)
    body = {
        "task": "What time is it in Paris?",
        "mcp_servers": ["time"],
        "tool_choice": "required",
        "max_tokens": 16,
        "temperature": 0,
    }
    response = await gateway.post("/v1/autonomous", json=body)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "length"  # the model writes text first; the limit cuts it
    assert run["output"].strip()
    assert (run["rounds"], run["steps"]) == (0, [])
    assert any("token limit" in w and "16" in w for w in run["warnings"]), run["warnings"]
    # issue 29, case 18: the forced choice brought no call, and the run says so (this engine's grammar blocks the
    # end of the turn until a call, so a "required" answer without one is always cut like this one)
    assert 'tool_choice "required" was asked for, but the model made no tool call' in run["warnings"]
    assert run["usage"]["completion_tokens"] == 16
    assert_consistent(run["usage"], 16)
    await assert_engine_counted(idle_engine, before, run["usage"])


# issue 29, cases 14 and 15: one forced, prefilled call (round 1), then max_rounds 1 ends the run with one call
# without tools, which this model fills with an imitated <tool_response> until max_tokens. The call takes 34
# tokens with its stop string (measured at temperature 0, no prompt cache): with max_tokens 48 round 1 ends at
# the stop string; with 32 it is cut after the call's JSON closed, before </tool_call>.
CUT_FINAL = 48
CUT_AFTER_CALL = 32


@pytest.mark.parametrize(
    "max_tokens", [CUT_FINAL, CUT_AFTER_CALL], ids=["final-answer-cut", "call-then-cut-and-final-answer-cut"]
)
async def test_a_final_answer_cut_after_max_rounds_ends_length(
    idle_engine: RealEngine, recorded: tuple[httpx.AsyncClient, Recorder], max_tokens: int
) -> None:
    client, recorder = recorded
    recorder.exchanges.clear()
    body = {
        "messages": [SYSTEM, {"role": "user", "content": "What time is it in Paris?"}, PREFILL],
        "mcp_servers": ["time"],
        "tool_choice": "required",
        "max_rounds": 1,
        "max_tokens": max_tokens,
        "temperature": 0,
        **ONE_CALL,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    run = answer["bridge_run"]
    exchanges = list(recorder.exchanges)
    _report(f"max_rounds 1, max_tokens {max_tokens}", run, exchanges)

    # what the engine said: round 1 a call, then the final call (no tools) cut at max_tokens
    first, final = (ex.response["choices"][0] for ex in exchanges)
    assert "tools" in exchanges[0].request and "tools" not in exchanges[1].request
    assert final["finish_reason"] == "length"
    assert exchanges[1].response["usage"]["completion_tokens"] == max_tokens

    # case 14: the run and the chat answer say the final answer was cut, not that it finished
    assert (run["status"], run["rounds"]) == ("length", 1)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"] == run["output"] == final["message"]["content"]
    assert any("token limit" in w and f"max_tokens {max_tokens}" in w for w in run["warnings"]), run["warnings"]

    # the call of round 1 ran on the real server, whole (case 15 when its answer was cut after it)
    [step] = run["steps"]
    assert (step["name"], step["round"], step["is_error"]) == ("time__get_current_time", 1, False)
    assert {"timezone", "datetime"} <= set(json.loads(step["output"]))
    cut_after_call = "The answer was cut at the token limit after complete tool call(s); they were run"
    if max_tokens == CUT_AFTER_CALL:
        assert first["finish_reason"] == "length" and first["message"]["tool_calls"]
        assert exchanges[0].response["usage"]["completion_tokens"] == max_tokens
        assert cut_after_call in run["warnings"]
    else:
        assert first["finish_reason"] in ("stop", "tool_calls")
        assert cut_after_call not in run["warnings"]


async def test_run_deadline_frees_the_engine(idle_engine: RealEngine, gateway: httpx.AsyncClient) -> None:
    body = {"task": STORY, "mcp_servers": ["time"], "tool_choice": "required", "max_tokens": 3000, "timeout_s": 1}
    # the same prompt once, so the engine has it cached and the deadline falls in generation (a prompt is
    # read in one batch of several seconds here, and a cancel takes effect only after it)
    warm = await gateway.post("/v1/autonomous", json={**body, "max_tokens": 1, "timeout_s": 60})
    assert warm.status_code == 200 and warm.json()["status"] == "length", warm.text
    decodes = await engine_metric(idle_engine, "llamacpp:n_decode_total")
    started = time.monotonic()
    response = await gateway.post("/v1/autonomous", json=body)
    answered_s = time.monotonic() - started
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "timeout"
    assert run["output"]
    assert 1.0 <= run["duration_ms"] / 1000 < 2.0 and answered_s < 3.0
    await idle_engine.wait_idle(IDLE_WITHIN_S, "engine slot idle after the run's deadline")
    assert await engine_metric(idle_engine, "llamacpp:n_decode_total") > decodes  # it did work on the call


@pytest.mark.parametrize("path", ["/v1/autonomous", "/v1/chat/completions"], ids=["run", "chat-pass-through"])
async def test_client_leaving_a_stream_frees_the_engine(
    idle_engine: RealEngine, gateway: httpx.AsyncClient, path: str
) -> None:
    if path == "/v1/autonomous":
        body: dict[str, Any] = {"task": STORY, "mcp_servers": ["time"], "tool_choice": "required"}
    else:
        body = {"messages": [{"role": "user", "content": STORY}], "ignore_eos": True}
    body.update(stream=True, max_tokens=3000, temperature=0)
    cancelled = await _cancelled_runs(gateway)
    async with gateway.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await eventually(idle_engine.tokens_generated, 30, "the engine generating for the stream", every_s=0.1)
    # leaving the block closed the connection mid-generation
    await idle_engine.wait_idle(IDLE_WITHIN_S, "engine slot idle after the client left")
    if path == "/v1/autonomous":
        await eventually(lambda: _cancelled_runs(gateway, cancelled + 1), 5, "the run counted as cancelled")


async def _cancelled_runs(gateway: httpx.AsyncClient, wanted: int | None = None) -> int | bool:
    """The gateway's count of cancelled runs (`wanted`: whether it is that now)."""
    count = 0
    for line in (await gateway.get("/metrics")).text.splitlines():
        if line.startswith('bridge_runs_total{status="cancelled"}'):
            count = int(float(line.rsplit(" ", 1)[1]))
    return count if wanted is None else count == wanted
