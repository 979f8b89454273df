"""Chat completions against the mock: tool calls, the answer from a tool result, an unknown model."""

from __future__ import annotations

import json

import pytest

from services.errors import ModelNotFoundError
from services.lmstudio import LMStudioClient
from tests.helpers import script
from tests.services.lmstudio.conftest import TOOLS


async def test_chat_tool_call_then_answer_from_tool_result(lm: LMStudioClient) -> None:
    task = "read it " + script(calls=[[{"name": "fs__read", "arguments": {"path": "/x"}}]])
    messages: list[dict[str, object]] = [{"role": "user", "content": task}]
    first = await lm.chat({"model": "qwen/qwen3-4b", "messages": messages, "tools": TOOLS})
    assert first.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [("fs__read", {"path": "/x"})]
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens > 0
    call = first.tool_calls[0]
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "FILE TEXT 42"},
    ]
    second = await lm.chat({"model": "qwen/qwen3-4b", "messages": messages, "tools": TOOLS})
    assert second.tool_calls == [] and second.finish_reason == "stop"
    assert "FILE TEXT 42" in (second.content or "")


async def test_unknown_model_lists_available(lm: LMStudioClient) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        await lm.chat({"model": "nope/x", "messages": [{"role": "user", "content": "hi"}]})
    assert "qwen/qwen3-4b" in info.value.available_models
