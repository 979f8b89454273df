"""The client's own duties: retries, the bearer token, and opening streams (retried until LM Studio accepts)."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict

import httpx
import pytest
from aiohttp import web

from services.errors import LLMValidationError
from services.lmstudio import LMStudioClient, RetryPolicy
from tests.helpers import script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.lmstudio.conftest import NO_RETRY, TOOLS

QWEN = "qwen/qwen3-4b"
CHAT = "/v1/chat/completions"
QUICK_RETRY = RetryPolicy(retries=2, backoff_s=0.01, backoff_max_s=0.02)


async def test_retries_absorb_a_burst_and_honour_retry_after(mock: MockLMStudio) -> None:
    client = LMStudioClient.create(mock.base_url, retry=QUICK_RETRY)
    await mock.faults({"kind": "status", "status": 503}, {"kind": "status", "status": 429, "retry_after": 0})
    result = await client.chat({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
    assert result.content
    assert len(await mock.requests()) == 3
    await mock.faults(*[{"kind": "status", "status": 400}] * 2)
    with pytest.raises(LLMValidationError):  # no retry on other 4xx
        await client.chat({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
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


async def test_opened_stream_carries_the_tool_calls_of_a_plain_answer(lm: LMStudioClient) -> None:
    calls = [
        [
            {"name": "fs__read", "arguments": {"path": "/a/long/path/name.txt"}},
            {"name": "fs__read", "arguments": {"path": "/b"}},
        ]
    ]
    payload = {
        "model": QWEN,
        "messages": [{"role": "user", "content": "two " + script(calls=calls)}],
        "tools": TOOLS,
        "stream_options": {"include_usage": True},
    }
    plain = await lm.chat(payload)
    response = await lm.open_stream(CHAT, json.dumps({**payload, "stream": True}).encode(), model=QWEN)
    try:
        assert response.headers["content-type"].startswith("text/event-stream") and not response.is_stream_consumed
        events = [line[len("data: ") :] async for line in response.aiter_lines() if line.startswith("data: ")]
    finally:
        await response.aclose()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    streamed: dict[int, list[str]] = {}
    for piece in (p for c in chunks for choice in c["choices"] for p in choice["delta"].get("tool_calls") or []):
        name_and_arguments = streamed.setdefault(piece["index"], ["", ""])
        name_and_arguments[0] += piece["function"].get("name") or ""
        name_and_arguments[1] += piece["function"].get("arguments") or ""
    assert len(plain.tool_calls) == 2
    assert [tuple(v) for _, v in sorted(streamed.items())] == [(c.name, c.arguments) for c in plain.tool_calls]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain.finish_reason == "tool_calls"
    assert chunks[-1]["model"] == plain.model and chunks[-1]["usage"] == asdict(plain.usage)


async def test_stream_is_retried_until_accepted_and_never_after(mock: MockLMStudio) -> None:
    client = LMStudioClient.create(mock.base_url, retry=QUICK_RETRY)
    body = json.dumps({"model": QWEN, "messages": [{"role": "user", "content": "a long answer"}], "stream": True})
    await mock.faults({"kind": "status", "status": 503}, {"kind": "cut_stream"})
    response = await client.open_stream(CHAT, body.encode(), model=QWEN)
    seen: list[str] = []
    with pytest.raises(httpx.HTTPError):  # cut after the first bytes: the caller sees it while reading
        async for line in response.aiter_lines():
            seen.append(line)
    await response.aclose()
    assert any(line.startswith("data: {") for line in seen) and "data: [DONE]" not in seen
    assert len(await mock.requests()) == 2  # the 503 was retried, the cut stream was not
    await mock.faults({"kind": "status", "status": 400})
    with pytest.raises(LLMValidationError):  # an error answer to a stream request is mapped like any other
        await client.open_stream(CHAT, body.encode(), model=QWEN)
    await client.aclose()


@pytest.mark.parametrize("traced", [False, True], ids=["direct", "through-httpx"])
async def test_an_exchange_sends_the_token_and_reads_a_compressed_answer(traced: bool) -> None:
    """A buffered answer goes straight to the transport's aiohttp session unless requests are traced; both
    ways send the same headers and decode a gzip body by its Content-Encoding."""
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append({**request.headers, "body": (await request.read()).decode()})
        body = {"model": "m", "choices": [{"message": {"content": "packed"}, "finish_reason": "stop"}]}
        packed = gzip.compress(json.dumps(body).encode())
        return web.Response(body=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post(CHAT, chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = LMStudioClient.create(f"http://127.0.0.1:{port}", token="s3cret", retry=NO_RETRY)
    if traced:
        client.trace_requests()
    try:
        assert client.wire.direct is not traced
        result = await client.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert result.content == "packed"
        assert seen[0]["Authorization"] == "Bearer s3cret"
        assert seen[0]["Content-Type"] == "application/json"
        assert json.loads(seen[0]["body"])["messages"] == [{"role": "user", "content": "hi"}]
    finally:
        await client.aclose()
        await runner.cleanup()


async def test_a_call_at_the_read_timeout_reuses_the_clients_limits() -> None:
    """A limit equal to the read timeout makes no new limits (the usual call); a shorter one shortens connecting
    too, and a connect limit longer than the read timeout is shortened to it, as before."""
    client = LMStudioClient.create("http://127.0.0.1:9", connect_timeout_s=5.0, read_timeout_s=120.0)
    wire = client.wire
    assert wire.timeouts(120.0) is wire.default_timeouts
    assert wire.timeouts(None) is wire.default_timeouts
    assert wire.timeouts(2.0) == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    await client.aclose()
    slow = LMStudioClient.create("http://127.0.0.1:9", connect_timeout_s=10.0, read_timeout_s=5.0)
    assert slow.wire.timeouts(5.0) == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    await slow.aclose()
