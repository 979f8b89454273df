"""The context window against the real engine (llama-server with SmolLM2, `-c 512`): the client reads the loaded
context from its listing and `/props`, turns its overflow answer (JSON and stream) into `ContextExceededError`
with the engine's numbers, and the token estimate errs high, then meets the engine's count once calibrated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from bench.token_count import request
from services.context import TokenCounter
from services.errors import ContextExceededError
from services.lmstudio import LMStudioClient, RetryPolicy
from tests.real_engine.engine import RealEngine, running_engine

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(300)]
WINDOW = 512


@pytest.fixture(scope="module")
def small_engine() -> Iterator[RealEngine]:
    with running_engine(["--ctx-size", str(WINDOW)]) as engine:
        yield engine


@pytest.fixture
async def client(small_engine: RealEngine) -> AsyncIterator[LMStudioClient]:
    client = LMStudioClient.create(small_engine.base_url, retry=RetryPolicy(retries=0))
    yield client
    await client.aclose()


async def test_the_listing_gives_the_loaded_window_and_the_models_maximum(client: LMStudioClient) -> None:
    [model] = await client.list_models()
    assert client.models_api == "llamacpp"
    assert (model.loaded_context_length, model.max_context_length) == (WINDOW, 8192)  # n_ctx, n_ctx_train


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_prompt_over_the_window_is_context_exceeded(
    client: LMStudioClient, small_engine: RealEngine, stream: bool
) -> None:
    payload = {"model": small_engine.model_id, "messages": [{"role": "user", "content": "hello world " * 400}]}
    with pytest.raises(ContextExceededError) as caught:
        if stream:
            await client.open_stream("/v1/chat/completions", json.dumps({**payload, "stream": True}).encode())
        else:
            await client.chat({**payload, "max_tokens": 4})
    error = caught.value
    assert (error.shape, error.n_ctx) == ("llama_400", WINDOW)
    assert error.n_prompt is not None and error.n_prompt > WINDOW


async def test_the_estimate_errs_high_then_meets_the_engines_count(
    client: LMStudioClient, small_engine: RealEngine
) -> None:
    counter = TokenCounter()
    seen: list[tuple[int, int]] = []
    for size in (40, 60, 80, 100):  # short tool outputs: the request fits in 512 tokens
        messages, _ = request(tool_output_chars=size)
        messages = messages[:1] + messages[-4:]  # the system prompt and two rounds
        messages[0] = {**messages[0], "content": messages[0]["content"][:300]}
        estimated = counter.estimate(small_engine.model_id, messages)
        answer = await client.chat({"model": small_engine.model_id, "messages": messages, "max_tokens": 1})
        seen.append((estimated, answer.usage.prompt_tokens))
        counter.observe(small_engine.model_id, estimated, answer.usage.prompt_tokens)
    assert seen[0][0] > seen[0][1]  # high before calibration
    assert abs(seen[-1][0] - seen[-1][1]) / seen[-1][1] < 0.1  # close once calibrated
