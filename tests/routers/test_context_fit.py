"""Issue 28's acceptance on the mock LM Studio, whose model holds a window and refuses what does not fit it
(tests/mock_lmstudio: ceil(chars / 4) of the JSON of messages and tools): every request the gateway sends fits,
whatever the tools, outputs and rounds; an engine that holds less than it lists is recovered when it says its
window (n_ctx), and ends `context_exceeded` when it does not — in JSON, SSE and chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.helpers import call, read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.mock_lmstudio.server import prompt_tokens

QWEN = "qwen/qwen3-4b"
CHAT = "/v1/chat/completions"
ZONES = [
    "UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Europe/London", "Asia/Kolkata",
    "Australia/Sydney", "America/Chicago", "Europe/Berlin", "Asia/Singapore", "America/Denver", "Africa/Cairo",
]  # fmt: skip
Gateway = Callable[..., Any]


def holding(tokens: int, listed: int | None = None, overflow: str = "n_keep_400") -> list[dict[str, Any]]:
    """QWEN loaded, holding `tokens`, its listings saying `listed` (default: the same)."""
    qwen = {"id": QWEN, "type": "llm", "loaded": True, "max_context_length": 32768, "tool_use": True}
    return [{**qwen, "context_length": tokens, "listed_context": listed or tokens, "overflow": overflow}]


@pytest.fixture
def gateway(mock: MockLMStudio, mcp_json: Path) -> Callable[[], Any]:
    @asynccontextmanager
    async def started() -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json))
        async with app_client(settings, timeout=120) as client:
            yield client

    return started


async def sent(mock: MockLMStudio) -> list[dict[str, Any]]:
    return [r["body"] for r in await mock.requests() if r["path"] == CHAT]


async def assert_all_fit(mock: MockLMStudio, window: int) -> list[dict[str, Any]]:
    bodies = await sent(mock)
    assert bodies
    for body in bodies:
        assert prompt_tokens(body) + body["max_tokens"] <= window, (prompt_tokens(body), body["max_tokens"])
    return bodies


async def test_every_reference_server_in_a_3000_token_window_completes_a_time_task(
    mock: MockLMStudio, gateway: Gateway
) -> None:
    await mock.configure(models=holding(3000))
    task = "What is the current time in Tokyo? " + script(
        calls=[[call("time__get_current_time", {"timezone": "Asia/Tokyo"})]], final="done"
    )
    async with gateway() as client:
        result = (await client.post("/v1/autonomous", json={"task": task})).json()
    assert result["status"] == "completed", result
    [step] = result["steps"]
    assert (step["server"], step["tool"], step["is_error"]) == ("time", "get_current_time", False)
    assert set(result["mcp_servers"]) >= {"time", "filesystem", "memory", "everything"}
    [fit] = [f for f in result["context"] if f["action"] == "tools"]
    first = (await assert_all_fit(mock, 3000))[0]
    names = [t["function"]["name"] for t in first["tools"]]
    assert "time__get_current_time" in names and "bridge__find_tools" in names
    assert fit["tokens_after"] < fit["tokens_before"]


async def test_a_380_kb_file_in_a_6000_token_window(mock: MockLMStudio, gateway: Gateway, files: Path) -> None:
    text = "BEGIN of the big file\n" + "".join(f"line {i:06d} of the big file\n" for i in range(14_000)) + "END"
    big = files / "big.txt"
    big.write_text(text)
    assert len(text) > 380_000
    await mock.configure(models=holding(6000))
    read_more = {"tool_call_id": "call_0_0", "offset": 200_000, "length": 300}
    task = "Read big.txt " + script(
        calls=[[call("filesystem__read_text_file", {"path": str(big)})], [call("bridge__read_output", read_more)]],
        final="read",
    )
    async with gateway() as client:
        result = (await client.post("/v1/autonomous", json={"task": task, "mcp_servers": ["filesystem"]})).json()
    assert result["status"] == "completed", result
    read, more = result["steps"]
    assert read["output"] == text  # the record keeps the whole output
    bodies = await assert_all_fit(mock, 6000)
    seen = next(m["content"] for m in bodies[1]["messages"] if m["role"] == "tool")
    assert seen.startswith("BEGIN of the big file") and "cut by lmstudio-bridge to fit the context window" in seen
    assert (more["name"], more["is_error"]) == ("bridge__read_output", False)
    assert text[200_000:200_300] in more["output"]


async def test_twelve_rounds_in_a_1600_token_window_keep_all_twelve_steps(mock: MockLMStudio, gateway: Gateway) -> None:
    await mock.configure(models=holding(1600))
    rounds = [[call("time__get_current_time", {"timezone": zone})] for zone in ZONES]
    task = "Tell the time in twelve zones " + script(calls=rounds, final="twelve times told")
    body = {"task": task, "mcp_servers": ["time"], "max_tokens": 128, "max_rounds": 13}
    async with gateway() as client:
        result = (await client.post("/v1/autonomous", json=body)).json()
    assert (result["status"], result["output"]) == ("completed", "twelve times told"), result
    assert [s["arguments"]["timezone"] for s in result["steps"]] == ZONES
    assert not any(s["is_error"] for s in result["steps"])
    await assert_all_fit(mock, 1600)
    assert any(f["action"] == "history" for f in result["context"])


OVERFLOW_TASK = "Read big.txt " + script(calls=[[call("fault__huge", {"chars": 30_000})]], final="read it")
RECOVERED = ["n_keep_400", "n_keep_200", "llama_400"]


async def run_json(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/v1/autonomous", json={"task": OVERFLOW_TASK, "mcp_servers": ["fault"]})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def run_sse(client: httpx.AsyncClient) -> dict[str, Any]:
    body = {"task": OVERFLOW_TASK, "mcp_servers": ["fault"], "stream": True}
    async with client.stream("POST", "/v1/autonomous", json=body) as response:
        events = await read_sse(response)
    assert events[-1][0] == "run.completed", events[-1]
    fitted = [data for name, data in events if name == "context.fitted"]
    result = dict(events[-1][1])
    assert fitted == result["context"]  # each fitting action was an event too
    return result


RUNS: dict[str, Callable[[httpx.AsyncClient], Awaitable[dict[str, Any]]]] = {"json": run_json, "sse": run_sse}


@pytest.mark.parametrize("how", RUNS)
@pytest.mark.parametrize("shape", RECOVERED)
async def test_an_engine_holding_less_than_it_lists_is_recovered_when_it_says_n_ctx(
    mock: MockLMStudio, gateway: Gateway, shape: str, how: str
) -> None:
    await mock.configure(models=holding(2000, listed=16_000, overflow=shape))
    async with gateway() as client:
        result = await RUNS[how](client)
    assert (result["status"], result["output"]) == ("completed", "read it"), result
    window = [f for f in result["context"] if f["action"] == "window"]
    assert [(f["tokens_before"], f["tokens_after"]) for f in window] == [(16_000, 2000)]
    refused = [b for b in await sent(mock) if prompt_tokens(b) >= 2000]
    assert len(refused) == 1  # the one request sent before the engine said its window


@pytest.mark.parametrize("how", RUNS)
async def test_an_empty_answer_ends_context_exceeded_never_completed(
    mock: MockLMStudio, gateway: Gateway, how: str
) -> None:
    await mock.configure(models=holding(2000, listed=16_000, overflow="empty_200"))
    async with gateway() as client:
        result = await RUNS[how](client)
    assert result["status"] == "context_exceeded" and result["output"], result
    assert any("context window" in w for w in result["warnings"])


async def test_chat_completions_with_mcp_answer_context_exceeded_or_recover(
    mock: MockLMStudio, gateway: Gateway
) -> None:
    chat = {"model": QWEN, "messages": [{"role": "user", "content": OVERFLOW_TASK}], "mcp_servers": ["fault"]}
    async with gateway() as client:
        await mock.configure(models=holding(2000, listed=16_000, overflow="empty_200"))
        refused = await client.post(CHAT, json=chat)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "context_exceeded"
        async with client.stream("POST", CHAT, json={**chat, "stream": True}) as response:
            text = (await response.aread()).decode()
        assert '"context_exceeded"' in text and text.rstrip().endswith("data: [DONE]")
        await mock.reset()
        await mock.configure(models=holding(2000, listed=16_000, overflow="llama_400"))
        recovered = await client.post(CHAT, json=chat)
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["choices"][0]["message"]["content"] == "read it"
