"""Structural facts of the raw engine (llama-server + SmolLM2-135M, Qwen2.5 tool template), no gateway.

These pin what later real-engine tests of the gateway rely on: the shapes of /v1/models, /props, /slots,
tool calls, finish reasons and usage, and that a client disconnect frees the slot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers import eventually
from tests.real_engine.engine import CONTEXT, MODEL_ALIAS, PARALLEL, RealEngine

pytestmark = pytest.mark.real_engine

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_time",
            "description": "Get the current time in a timezone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA timezone, e.g. Europe/Paris"}},
                "required": ["timezone"],
            },
        },
    }
]
QUESTION = {"role": "user", "content": "What time is it in Paris?"}
# SmolLM2-135M never writes <tool_call> by itself, and this llama.cpp's "required" grammar lets free text
# come first; an assistant prefill (continued by the engine) makes the model start inside the call.
PREFILL = {"role": "assistant", "content": "<tool_call>\n"}


@pytest.fixture
async def client(real_engine: RealEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=real_engine.base_url, timeout=60) as client:
        yield client


async def chat(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json={"temperature": 0, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def sse_events(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of a stream, JSON-decoded, "[DONE]" kept as the string."""
    events: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_models_lists_the_model(real_engine: RealEngine, client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert model["id"] == real_engine.model_id == MODEL_ALIAS
    assert model["object"] == "model"
    assert model["owned_by"] == "llamacpp"
    assert model["meta"]["n_ctx"] == CONTEXT
    assert model["meta"]["n_ctx_train"] == 8192


async def test_props_and_slots_give_the_context_size(real_engine: RealEngine, client: httpx.AsyncClient) -> None:
    props = (await client.get("/props")).json()
    assert props["default_generation_settings"]["n_ctx"] == real_engine.context_length == CONTEXT
    assert props["total_slots"] == PARALLEL
    assert props["model_alias"] == MODEL_ALIAS
    assert props["chat_template_caps"]["supports_tool_calls"] is True
    assert props["endpoint_slots"] is True and props["endpoint_metrics"] is True
    slots = await real_engine.slots()
    assert [slot["id"] for slot in slots] == list(range(PARALLEL))
    assert all(slot["n_ctx"] == CONTEXT for slot in slots)  # --kv-unified: every slot may use it all
    assert "llamacpp:requests_processing" in await real_engine.metrics_text()


async def test_required_tool_call_comes_back_parsed(client: httpx.AsyncClient) -> None:
    body = await chat(client, messages=[QUESTION, PREFILL], tools=TOOLS, tool_choice="required", max_tokens=128)
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == ""
    assert message["tool_calls"]  # this model repeats the call: two identical calls, parallel or not
    for call in message["tool_calls"]:
        assert call["type"] == "function"
        assert isinstance(call["id"], str) and call["id"]
        assert call["function"]["name"] == "get_current_time"
        assert isinstance(call["function"]["arguments"], str)
        arguments = json.loads(call["function"]["arguments"])
        assert isinstance(arguments["timezone"], str)
    assert body["usage"]["completion_tokens"] > 0


async def test_required_lets_text_come_first_but_never_stops_without_a_call(client: httpx.AsyncClient) -> None:
    body = await chat(client, messages=[QUESTION], tools=TOOLS, tool_choice="required", max_tokens=16)
    [choice] = body["choices"]
    assert choice["finish_reason"] in ("length", "tool_calls")  # end of turn is grammar-blocked until a call
    if choice["finish_reason"] == "length":
        assert choice["message"]["content"]
        assert "tool_calls" not in choice["message"]


async def test_streamed_chat(client: httpx.AsyncClient) -> None:
    request = {
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 8,
        "temperature": 0,
    }
    async with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes in (["stop"], ["length"])
    usage_chunk = chunks[-1]  # include_usage: a last chunk with no choices
    assert usage_chunk["choices"] == []
    assert 0 < usage_chunk["usage"]["completion_tokens"] <= 8


async def test_streamed_tool_call(client: httpx.AsyncClient) -> None:
    request = {
        "messages": [QUESTION, PREFILL],
        "tools": TOOLS,
        "tool_choice": "required",
        "stream": True,
        "max_tokens": 128,
        "temperature": 0,
    }
    async with client.stream("POST", "/v1/chat/completions", json=request) as response:
        events = await sse_events(response)
    calls: dict[int, dict[str, str]] = {}
    for chunk in events[:-1]:
        for delta_call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta_call["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += delta_call.get("id", "")
            call["name"] += delta_call.get("function", {}).get("name", "")
            call["arguments"] += delta_call.get("function", {}).get("arguments", "")
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert calls
    for call in calls.values():
        assert call["id"] and call["name"] == "get_current_time"
        assert isinstance(json.loads(call["arguments"])["timezone"], str)


async def test_max_tokens_gives_length_and_exact_usage(client: httpx.AsyncClient) -> None:
    body = await chat(client, messages=[{"role": "user", "content": "Write a long story."}], max_tokens=5)
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


async def test_prompt_over_the_context_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi " * 5000}], "max_tokens": 3}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == CONTEXT and error["n_prompt_tokens"] > CONTEXT


async def test_slot_busy_while_generating_and_idle_after_disconnect(
    real_engine: RealEngine, client: httpx.AsyncClient
) -> None:
    request = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "stream": True,
        "max_tokens": 3000,
        "ignore_eos": True,  # llama.cpp extension: keeps it generating for about a minute unless cancelled
        "temperature": 0,
    }
    await eventually(lambda: _no_busy_slot(real_engine), 10, "no slot busy before the test")
    async with client.stream("POST", "/v1/chat/completions", json=request) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: ") and '"content"' in line and '"content":null' not in line:
                break  # tokens are flowing
        assert await real_engine.slots_busy() == 1
        assert "llamacpp:requests_processing 1" in await real_engine.metrics_text()
    # leaving the block closes the connection: the engine cancels the task and frees the slot
    await eventually(lambda: _no_busy_slot(real_engine), 5, "slot idle after the client disconnected")
    assert "llamacpp:requests_processing 0" in await real_engine.metrics_text()


async def _no_busy_slot(engine: RealEngine) -> bool:
    return await engine.slots_busy() == 0
