"""LM Studio client against the mock as a real HTTP server: model APIs, chat, streaming, fault mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from services.errors import (
    LLMConnectionError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMValidationError,
    ModelNotFoundError,
    NotSupportedError,
)
from services.lmstudio import LMStudioClient
from services.retry import RetryPolicy
from tests.mock_lmstudio.fixture import MockLMStudio, free_port, mock_lmstudio

NO_RETRY = RetryPolicy(retries=0)
TOOLS = [
    {
        "type": "function",
        "function": {"name": "fs__read", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
    }
]


def script(**spec: object) -> str:
    return f"[[mock {json.dumps(spec)}]]"


@pytest.fixture
async def lm(mock: MockLMStudio) -> AsyncIterator[LMStudioClient]:
    client = LMStudioClient.create(mock.base_url, read_timeout_s=5, retry=NO_RETRY)
    yield client
    await client.aclose()


@pytest.mark.parametrize(("api", "detected"), [("v1", "api-v1"), ("v0", "api-v0"), ("openai", "openai")])
async def test_model_list_detects_each_api_and_normalises(api: str, detected: str) -> None:
    async with mock_lmstudio("--api", api) as mock:
        client = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
        models = await client.list_models()
        await client.aclose()
    by_id = {m.id: m for m in models}
    assert client.models_api == detected
    assert models[0].id == "text-embedding-nomic-embed-text-v1.5"
    assert by_id["text-embedding-nomic-embed-text-v1.5"].type == "embedding"
    assert "qwen/qwen3-4b" in by_id
    if api != "openai":  # the OpenAI list says nothing about state or capabilities
        assert by_id["qwen/qwen3-4b"].loaded and by_id["qwen/qwen3-4b"].tool_use
        assert not by_id["qwen/qwen3-coder-30b"].loaded
        assert by_id["google/gemma-3-4b"].type == "vlm"
        assert by_id["qwen/qwen3-4b"].max_context_length == 32768


async def test_detection_happens_once(lm: LMStudioClient, mock: MockLMStudio) -> None:
    await lm.list_models()
    await lm.list_models()
    paths = [r["path"] for r in await mock.requests()]
    assert paths == ["/api/v1/models", "/api/v1/models"]


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


async def test_streamed_and_plain_tool_calls_assemble_to_equal_results(lm: LMStudioClient) -> None:
    calls = [
        [
            {"name": "fs__read", "arguments": {"path": "/a/long/path/name.txt"}},
            {"name": "fs__read", "arguments": {"path": "/b"}},
        ]
    ]
    payload = {
        "model": "qwen/qwen3-4b",
        "messages": [{"role": "user", "content": "two " + script(calls=calls)}],
        "tools": TOOLS,
        "stream_options": {"include_usage": True},
    }
    plain = await lm.chat(payload)
    streamed = await lm.chat_streamed(payload)
    assert len(plain.tool_calls) == 2
    assert streamed.tool_calls == plain.tool_calls
    assert streamed.finish_reason == plain.finish_reason == "tool_calls"
    assert streamed.model == plain.model
    assert streamed.usage == plain.usage
    text_payload = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hello there"}]}
    assert (await lm.chat_streamed(text_payload)).content == (await lm.chat(text_payload)).content


async def test_unknown_model_lists_available(lm: LMStudioClient) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        await lm.chat({"model": "nope/x", "messages": [{"role": "user", "content": "hi"}]})
    assert "qwen/qwen3-4b" in info.value.available_models


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "status", "status": 500}, LLMResponseError),
        ({"kind": "status", "status": 502}, LLMResponseError),
        ({"kind": "status", "status": 503}, LLMResponseError),
        ({"kind": "status", "status": 504}, LLMResponseError),
        ({"kind": "status", "status": 429, "retry_after": 7}, LLMRateLimitError),
        ({"kind": "status", "status": 400}, LLMValidationError),
        ({"kind": "malformed_json"}, LLMResponseError),
        ({"kind": "cut_stream"}, LLMResponseError),
        ({"kind": "unknown_model"}, ModelNotFoundError),
        ({"kind": "unload"}, ModelNotFoundError),
        ({"kind": "hang"}, LLMTimeoutError),
    ],
)
async def test_each_fault_maps_to_its_exception(
    mock: MockLMStudio, fault: dict[str, object], error: type[Exception]
) -> None:
    client = LMStudioClient.create(mock.base_url, read_timeout_s=0.5, retry=NO_RETRY)
    await mock.faults(fault)
    with pytest.raises(error) as info:
        await client.chat({"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]})
    await client.aclose()
    if fault.get("retry_after"):
        assert info.value.retry_after == 7
    status = fault.get("status")
    assert info.value.retryable == (status in (429, 502, 503, 504))


async def test_cut_stream_fails_the_stream(lm: LMStudioClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "cut_stream"})
    with pytest.raises(LLMResponseError):
        await lm.chat_streamed({"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "a long answer"}]})


async def test_connection_refused_is_a_connection_error() -> None:
    client = LMStudioClient.create(f"http://127.0.0.1:{free_port()}", retry=NO_RETRY)
    with pytest.raises(LLMConnectionError) as info:
        await client.list_models()
    assert info.value.retryable
    await client.aclose()


async def test_retries_absorb_a_burst_and_honour_retry_after(mock: MockLMStudio) -> None:
    client = LMStudioClient.create(mock.base_url, retry=RetryPolicy(retries=2, backoff_s=0.01, backoff_max_s=0.02))
    await mock.faults({"kind": "status", "status": 503}, {"kind": "status", "status": 429, "retry_after": 0})
    result = await client.chat({"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]})
    assert result.content
    assert len(await mock.requests()) == 3
    await mock.faults(*[{"kind": "status", "status": 400}] * 2)
    with pytest.raises(LLMValidationError):  # no retry on other 4xx
        await client.chat({"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]})
    assert len(await mock.requests()) == 4
    await client.aclose()


async def test_bearer_token_and_ttl_are_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"model": "m", "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://lm", headers={"Authorization": "Bearer s3cret"}
    )
    client = LMStudioClient(http, retry=NO_RETRY)
    await client.chat({"model": "m", "messages": [], "ttl": 300})
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert json.loads(seen[0].content)["ttl"] == 300
    await client.aclose()


async def test_unexpected_endpoint_quirk_is_an_error_not_a_result() -> None:
    async with mock_lmstudio("--api", "openai") as mock:
        client = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
        with pytest.raises(NotSupportedError, match="Unexpected endpoint"):
            await client.request_json("GET", "/api/v1/models")
        await client.aclose()
