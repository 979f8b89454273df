"""Every recorded overflow answer (tests/data/context_overflow.json) becomes one `ContextExceededError` through the
client: a chat, the chat pass-through and a stream; and answers that only look like it do not."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from services.breaker import Breaker
from services.errors import ContextExceededError, LLMValidationError, UpstreamUnavailableError
from services.lmstudio import LMStudioClient, counts_against_lmstudio
from tests.helpers import REPO
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.lmstudio.conftest import NO_RETRY, TOOLS

RECORDED: dict[str, Any] = json.loads((REPO / "tests" / "data" / "context_overflow.json").read_text())
SHAPES = sorted(name for name in RECORDED if not name.startswith("_"))
CHAT = "/v1/chat/completions"
PAYLOAD = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]}


def answering(status: int, body: Any, seen: list[str] | None = None) -> LMStudioClient:
    """A client whose host answers every request with `status` and `body`."""

    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        return httpx.Response(status, json=body)

    http = httpx.AsyncClient(base_url="http://lmstudio", transport=httpx.MockTransport(answer))

    def unavailable(detail: str, wait: float) -> UpstreamUnavailableError:
        return UpstreamUnavailableError(detail, retry_after=wait)

    breaker = Breaker("lmstudio", failures=1, reset_s=60, counts=counts_against_lmstudio, unavailable=unavailable)
    return LMStudioClient(http, retry=NO_RETRY, breaker=breaker)


def check(error: ContextExceededError, recorded: dict[str, Any]) -> None:
    assert (error.shape, error.n_ctx, error.n_prompt) == (recorded["shape"], recorded["n_ctx"], recorded["n_prompt"])
    assert (error.status, error.code) == (422, "context_exceeded")
    problem = error.problem()
    assert (problem["n_ctx"], problem["n_prompt"], problem["shape"]) == (error.n_ctx, error.n_prompt, error.shape)


@pytest.mark.parametrize("name", SHAPES)
async def test_each_recorded_overflow_is_context_exceeded_on_chat(name: str) -> None:
    recorded = RECORDED[name]
    seen: list[str] = []
    client = answering(recorded["status"], recorded["body"], seen)
    try:
        with pytest.raises(ContextExceededError) as caught:
            await client.chat(PAYLOAD)
        check(caught.value, recorded)
        assert client.breaker is not None and client.breaker.state == "closed"  # the host is fine: no failure
    finally:
        await client.aclose()
    assert seen == [CHAT]  # never retried


@pytest.mark.parametrize("name", SHAPES)
async def test_each_recorded_overflow_is_context_exceeded_through_the_pass_through(name: str) -> None:
    recorded = RECORDED[name]
    client = answering(recorded["status"], recorded["body"])
    try:
        with pytest.raises(ContextExceededError) as caught:
            await client.forward(CHAT, json.dumps(PAYLOAD).encode(), model="qwen/qwen3-4b")
        check(caught.value, recorded)
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", [n for n in SHAPES if not n.startswith("empty")])
async def test_an_error_answer_to_a_stream_is_context_exceeded(name: str) -> None:
    """A stream that the engine refuses answers JSON (with 400, or 200 in LM Studio 0.4.21), not a stream."""
    recorded = RECORDED[name]
    client = answering(recorded["status"], recorded["body"])
    try:
        with pytest.raises(ContextExceededError) as caught:
            await client.open_stream(CHAT, json.dumps({**PAYLOAD, "stream": True}).encode())
        check(caught.value, recorded)
    finally:
        await client.aclose()


def completion(message: dict[str, Any], completion_tokens: int | None) -> dict[str, Any]:
    usage = None if completion_tokens is None else {"prompt_tokens": 9, "completion_tokens": completion_tokens}
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message}}
    return {"object": "chat.completion", "model": "m", "choices": [choice], "usage": usage}


@pytest.mark.parametrize(
    "body",
    [
        completion({"content": ""}, 3),  # the model said nothing, in 3 tokens (an end-of-turn, a space...)
        completion({"content": None, "tool_calls": [{"id": "c", "function": {"name": "t", "arguments": "{}"}}]}, 0),
        completion({"content": "", "reasoning_content": "thinking"}, 0),
        completion({"content": "hello"}, 0),
    ],
    ids=["tokens-generated", "tool-call", "reasoning", "text"],
)
async def test_answers_that_said_something_are_not_overflows(body: dict[str, Any]) -> None:
    client = answering(200, body)
    try:
        await client.chat(PAYLOAD)
        await client.forward(CHAT, json.dumps(PAYLOAD).encode())
    finally:
        await client.aclose()


async def test_another_400_is_still_upstream_rejected() -> None:
    client = answering(400, {"error": {"message": "'messages' field is required", "type": "invalid_request_error"}})
    try:
        with pytest.raises(LLMValidationError):
            await client.chat(PAYLOAD)
    finally:
        await client.aclose()


@pytest.mark.parametrize("shape", ["n_keep_400", "n_keep_200", "empty_200"])
async def test_the_mocks_overflow_shapes_through_the_client(lm: LMStudioClient, mock: MockLMStudio, shape: str) -> None:
    """The mock (a real HTTP server) holding 64 tokens while it lists 4096: each shape, with its numbers."""
    qwen = {"id": "qwen/qwen3-4b", "type": "llm", "loaded": True, "max_context_length": 32768, "tool_use": True}
    await mock.configure(models=[{**qwen, "context_length": 64, "listed_context": 4096, "overflow": shape}])
    [listed] = await lm.list_models()
    assert listed.loaded_context_length == 4096  # what it lists, not what it holds
    payload = {**PAYLOAD, "messages": [{"role": "user", "content": "x" * 400}], "tools": TOOLS}
    with pytest.raises(ContextExceededError) as caught:
        await lm.chat(payload)
    [sent] = [r for r in await mock.requests() if r["path"] == CHAT]
    n_prompt = -(-(len(json.dumps(payload["messages"])) + len(json.dumps(TOOLS))) // 4)
    expected = (shape, None if shape == "empty_200" else 64, n_prompt)
    assert (caught.value.shape, caught.value.n_ctx, caught.value.n_prompt) == expected
    assert sent["status"] == (400 if shape == "n_keep_400" else 200)


async def test_llamacpp_overflow_from_the_mock_in_llamacpp_mode() -> None:
    from tests.mock_lmstudio.fixture import mock_lmstudio

    async with mock_lmstudio("--api", "llamacpp") as mock:
        qwen = {"id": "smol", "type": "llm", "loaded": True, "max_context_length": 8192, "tool_use": True}
        await mock.configure(models=[{**qwen, "context_length": 32}])
        client = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
        try:
            [listed] = await client.list_models()
            with pytest.raises(ContextExceededError) as caught:
                await client.chat({**PAYLOAD, "model": "smol", "messages": [{"role": "user", "content": "y" * 200}]})
        finally:
            await client.aclose()
    assert client.models_api == "llamacpp" and listed.loaded_context_length == 32
    assert (caught.value.shape, caught.value.n_ctx) == ("llama_400", 32)
