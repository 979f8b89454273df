"""OpenAI-compatible endpoints with the official openai SDK against a real gateway socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageFunctionToolCall

from tests.conftest import make_settings, served
from tests.helpers import TIME_CALL, call, script
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio

pytestmark = pytest.mark.timeout(120)
MODEL = "qwen/qwen3-4b"
ASK_TIME = "What time is it? " + script(calls=[[TIME_CALL]])
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def sdk(live: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="unused", max_retries=0)


def user(content: str) -> Any:
    """The messages of a one-question conversation."""
    return [{"role": "user", "content": content}]


async def test_plain_chat_equals_lmstudio(sdk: openai.AsyncOpenAI, mock: MockLMStudio) -> None:
    via_gateway = await sdk.chat.completions.create(model=MODEL, messages=user("Say hello"))
    direct = openai.AsyncOpenAI(base_url=f"{mock.base_url}/v1", api_key="x", max_retries=0)
    straight = await direct.chat.completions.create(model=MODEL, messages=user("Say hello"))
    assert via_gateway.choices[0].message.content == straight.choices[0].message.content == "Mock answer to: Say hello"
    assert via_gateway.model == straight.model and via_gateway.usage == straight.usage


async def test_passthrough_is_byte_faithful(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body = {"model": MODEL, "messages": user("bytes")}
    via = await live.post("/v1/chat/completions", json=body)
    straight = await mock.client.post("/v1/chat/completions", json=body)

    def strip(raw: bytes) -> dict[str, Any]:
        return {k: v for k, v in json.loads(raw).items() if k not in ("id", "created")}

    assert strip(via.content) == strip(straight.content)
    assert via.headers["content-type"] == straight.headers["content-type"]


async def test_streamed_chat(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(model=MODEL, messages=user("Stream this please"), stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "Mock answer to: Stream this please"


async def test_embedding(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.embeddings.create(model="text-embedding-nomic-embed-text-v1.5", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8


async def test_embedding_with_a_chat_model_is_422(live: httpx.AsyncClient) -> None:
    response = await live.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


async def test_text_completion(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.completions.create(model=MODEL, prompt="Once upon")
    assert result.choices[0].text == "Mock completion of: Once upon"


async def test_chat_through_mcp_via_extra_body(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(
        model=MODEL, messages=user(ASK_TIME), extra_body={"mcp_servers": ["time"]}
    )
    assert answer.object == "chat.completion"
    assert "UTC" in (answer.choices[0].message.content or "")
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model_extra is not None
    run = answer.model_extra["bridge_run"]
    assert run["status"] == "completed" and run["steps"][0]["tool"] == "get_current_time"
    assert answer.usage and answer.usage.total_tokens == run["usage"]["total_tokens"]


async def test_chat_through_mcp_via_tool_entry(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(
        model=MODEL,
        messages=user(ASK_TIME),
        tools=[{"type": "mcp", "server_label": "time"}],  # type: ignore[list-item]  # the gateway's own tool entry
    )
    assert "UTC" in (answer.choices[0].message.content or "")


async def test_chat_through_mcp_streamed(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=user(ASK_TIME),
        extra_body={"mcp_servers": ["time"]},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "UTC" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("with_mcp", [False, True])
async def test_client_function_tool_comes_back_unexecuted(sdk: openai.AsyncOpenAI, with_mcp: bool) -> None:
    answer = await sdk.chat.completions.create(
        model=MODEL,
        messages=user("Weather? " + script(calls=[[call("get_weather", {"city": "Oslo"})]])),
        tools=[WEATHER_TOOL],
        extra_body={"mcp_servers": ["time"]} if with_mcp else None,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls or []
    assert isinstance(tool_call, ChatCompletionMessageFunctionToolCall)
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Oslo"}


async def test_unknown_model_is_the_same_422(live: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    response = await live.post("/v1/chat/completions", json={"model": "nope/x", "messages": user("hi")})
    assert response.status_code == 422
    assert response.json()["code"] == "model_not_found" and MODEL in response.json()["available_models"]
    with pytest.raises(openai.UnprocessableEntityError):
        await sdk.chat.completions.create(model="nope/x", messages=user("hi"))


async def test_load_and_unload(live: httpx.AsyncClient) -> None:
    model = "qwen/qwen3-coder-30b"
    loaded = await live.post(f"/v1/models/{model}/load", json={"ttl": 600})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["status"] == "loaded"
    states = {m["id"]: m["state"] for m in (await live.get("/v1/models")).json()["data"]}
    assert states[model] == "loaded"
    unloaded = await live.post(f"/v1/models/{model}/unload")
    assert unloaded.status_code == 200
    states = {m["id"]: m["state"] for m in (await live.get("/v1/models")).json()["data"]}
    assert states[model] == "not-loaded"
    missing = await live.post("/v1/models/nope/x/load")
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"


async def test_load_without_rest_api_is_501() -> None:
    async with mock_lmstudio("--api", "v0") as old, served(make_settings(lmstudio_base_url=old.base_url)) as client:
        response = await client.post(f"/v1/models/{MODEL}/load")
        responses_api = await client.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert response.status_code == 501 and response.json()["code"] == "not_supported_by_lmstudio"
    assert responses_api.status_code == 501 and responses_api.json()["code"] == "not_supported_by_lmstudio"


async def test_chat_with_mcp_honours_the_rounds_default(mock: MockLMStudio, mcp_json: Path) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), max_rounds_default=1)
    async with served(settings) as gateway:
        body = {"messages": [{"role": "user", "content": "Loop " + script(forever=TIME_CALL)}], "mcp_servers": ["time"]}
        answer = (await gateway.post("/v1/chat/completions", json=body)).json()
    run = answer["bridge_run"]
    assert (run["status"], run["rounds"]) == ("max_rounds", 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_rounds": "abc"},
        {"max_rounds": 0},
        {"allowed_tools": 7},
        {"timeout_s": "soon"},
        {"system_prompt": ["x"]},
        {"max_tokens": -1},
        {"tool_choice": 3},
        {"mcp_servers": "time"},
        {"messages": {"role": "user"}},
        {"messages": [1, 2]},
        {"messages": []},
    ],
)
async def test_wrong_bridge_fields_are_422_naming_the_field(live: httpx.AsyncClient, bad: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "mcp_servers": ["time"], **bad}
    response = await live.post("/v1/chat/completions", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error" and next(iter(bad)) in problem["detail"]
