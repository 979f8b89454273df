"""Counting a request's prompt before it is sent: high before calibration, calibrated per model by the engine's
counts (up at once, down slowly, within bounds), text weighed by its UTF-8 size, the tools' size remembered."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bench.token_count import request
from services.context import TokenCounter
from services.context.tokens import (
    IMAGE_TOKENS,
    MESSAGE_TOKENS,
    NO_SYSTEM_TOKENS,
    RATIO_MAX,
    RATIO_MIN,
    REPLY_TOKENS,
    TOOL_CALL_TOKENS,
    TOOL_RESULT_TOKENS,
    TOOLS_TOKENS,
)
from services.lmstudio import LMStudioClient
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.lmstudio.conftest import NO_RETRY, TOOLS

SYSTEM = {"role": "system", "content": ""}  # with it, no allowance for a template's own system prompt
BASE = REPLY_TOKENS + MESSAGE_TOKENS  # an empty request with the system message


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def test_text_at_3_2_characters_a_token_plus_the_templates_overhead() -> None:
    counter = TokenCounter()
    assert counter.count([SYSTEM, user("x" * 320)]) == BASE + MESSAGE_TOKENS + 100
    assert counter.count([SYSTEM, user("x" * 320), user("")]) == BASE + 2 * MESSAGE_TOKENS + 100
    assert counter.count([user("x" * 320)]) == REPLY_TOKENS + MESSAGE_TOKENS + NO_SYSTEM_TOKENS + 100
    assert counter.estimate("m", []) == REPLY_TOKENS + NO_SYSTEM_TOKENS


def test_before_calibration_the_estimate_is_above_four_characters_a_token() -> None:
    """A first request must not overflow: above the mock's rule (ceil(chars/4) of the whole JSON, markup
    included) for a realistic 4k-token request."""
    messages, tools = request()
    mock_rule = math.ceil((len(json.dumps(messages)) + len(json.dumps(tools))) / 4)
    assert TokenCounter().estimate("m", messages, tools) > mock_rule


def test_text_weighs_its_utf8_bytes() -> None:
    counter = TokenCounter()
    cjk = "上下文窗口" * 64  # 320 characters, 960 bytes: about one token each
    assert counter.count([SYSTEM, user(cjk)]) == BASE + MESSAGE_TOKENS + 300
    assert counter.count([user("é" * 160)]) == counter.count([user("x" * 320)])


def test_parts_tool_calls_names_and_tools_count() -> None:
    counter = TokenCounter()
    parts = [{"type": "text", "text": "x" * 32}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    assert counter.count([SYSTEM, user(parts)]) == BASE + MESSAGE_TOKENS + IMAGE_TOKENS + 10
    call = {"id": "c", "type": "function", "function": {"name": "a" * 16, "arguments": "b" * 16}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = {"role": "tool", "tool_call_id": "c" * 32, "content": ""}
    expected = BASE + 2 * MESSAGE_TOKENS + TOOL_CALL_TOKENS + TOOL_RESULT_TOKENS + 20
    assert counter.count([SYSTEM, assistant, tool]) == expected
    with_tools = counter.count([SYSTEM], TOOLS)
    assert with_tools == BASE + TOOLS_TOKENS + math.ceil(len(json.dumps(TOOLS)) / 3.2)


def test_the_same_tools_are_measured_once_whatever_list_holds_them() -> None:
    counter = TokenCounter()
    tools = [dict(t) for t in TOOLS]
    first = counter.count([], tools)
    tools[0]["function"] = {"name": "x" * 500}  # an entry changed in place (never done): not seen, so remembered
    assert counter.count([], list(tools)) == first  # a new list (each run makes one) of the same tool objects
    tools[0] = dict(TOOLS[0], function={"name": "y" * 500})  # another tool object: measured again
    assert counter.count([], tools) > first
    assert counter.count([], [*tools, TOOLS[0]]) > counter.count([], tools)  # one more tool
    assert counter.count([], [dict(t) for t in TOOLS]) == first  # new objects of the same tools: the same size


def test_an_underestimate_raises_the_ratio_at_once_an_overestimate_lowers_it_slowly() -> None:
    counter = TokenCounter()
    assert counter.observe("m", 1000, 1300) == pytest.approx(1.3)
    assert counter.estimate("m", [SYSTEM, user("x" * 320)]) == math.ceil((BASE + MESSAGE_TOKENS + 100) * 1.3)
    lowered = counter.observe("m", 1300, 800)  # the ratio that would have fitted: 0.8
    assert 0.8 < lowered < 1.3 and lowered == pytest.approx(1.3 + 0.5 * (0.8 - 1.3))
    assert counter.ratio("other") == 1.0  # per model


def test_calibration_converges_on_the_engines_count() -> None:
    counter = TokenCounter()
    messages, tools = request()
    engine = int(counter.count(messages, tools) * 0.75)  # this model's tokenizer: 25 % fewer than the estimate
    for _ in range(30):
        counter.observe("m", counter.estimate("m", messages, tools), engine)
    assert counter.estimate("m", messages, tools) == pytest.approx(engine, rel=0.01)


def test_the_ratio_stays_within_bounds_and_small_prompts_do_not_calibrate() -> None:
    counter = TokenCounter()
    assert counter.observe("m", 100, 10_000) == RATIO_MAX
    for _ in range(100):
        counter.observe("m", 10_000, 100)
    assert counter.ratio("m") == RATIO_MIN
    assert counter.observe("n", 10, 31) == 1.0 and counter.observe("n", 0, 500) == 1.0
    assert counter.ratios() == {"m": RATIO_MIN}


async def test_calibrated_on_the_mocks_counts_the_estimate_meets_them(mock: MockLMStudio) -> None:
    """The engine's `usage.prompt_tokens` (the mock counts ceil(chars/4) of the JSON) calibrates the estimate."""
    counter = TokenCounter()
    lm = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
    seen = []
    for size in (1000, 1400, 1800, 2200, 2600):
        messages, tools = request(tool_output_chars=size)
        estimated = counter.estimate("qwen/qwen3-4b", messages, tools)
        answer = await lm.chat({"model": "qwen/qwen3-4b", "messages": messages, "tools": tools, "max_tokens": 8})
        seen.append((estimated, answer.usage.prompt_tokens))
        counter.observe("qwen/qwen3-4b", estimated, answer.usage.prompt_tokens)
    await lm.aclose()
    first, last = seen[0], seen[-1]
    assert first[0] > first[1]  # high before calibration
    assert abs(last[0] - last[1]) / last[1] < 0.05  # within 5 % after four answers
