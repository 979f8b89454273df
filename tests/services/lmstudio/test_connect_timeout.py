"""BRIDGE_LMSTUDIO_CONNECT_TIMEOUT_S is the connect limit on every path to LM Studio (issue 29, item 8): the
time limits each request goes out with are read where they are handed to aiohttp or to httpx's transport."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from services.lmstudio import LMStudioClient
from tests.helpers import script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.lmstudio.conftest import NO_RETRY

CONNECT_S = 1.25
QWEN, CODER = "qwen/qwen3-4b", "qwen/qwen3-coder-30b"


class Seen:
    """The connect and pool limits of every request, by the path it went on (`direct`: aiohttp read whole)."""

    def __init__(self) -> None:
        self.limits: list[tuple[str, str, float | None, float | None]] = []

    def of(self, via: str) -> list[tuple[str, float | None, float | None]]:
        return [(path, connect, pool) for v, path, connect, pool in self.limits if v == via]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """Every request as aiohttp gets it (both ways end there): httpx-aiohttp's transport is told apart by the
    `auto_decompress=False` it passes."""
    record = Seen()
    session_request = aiohttp.ClientSession._request

    def request(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout")
        assert isinstance(timeout, aiohttp.ClientTimeout)
        via = "httpx" if kwargs.get("auto_decompress") is False else "direct"
        record.limits.append((via, httpx.URL(str(url)).path, timeout.sock_connect, timeout.connect))
        return session_request(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", request)
    yield record


async def test_every_path_connects_within_the_configured_limit(mock: MockLMStudio, seen: Seen) -> None:
    client = LMStudioClient.create(mock.base_url, connect_timeout_s=CONNECT_S, read_timeout_s=30, retry=NO_RETRY)
    chat = {"model": QWEN, "messages": [{"role": "user", "content": "hi " + script(answer="ok")}]}
    try:
        await client.list_models()  # the model listing (read whole, direct)
        await client.chat(chat)  # the chat path read whole via aiohttp (was connect 5 s whatever was configured)
        await client.chat(chat, deadline=time.monotonic() + 20)  # inside a run: the deadline shortens only reading
        stream = await client.open_stream(
            "/v1/chat/completions", b'{"model": "%s", "stream": true, "messages": []}' % QWEN.encode()
        )
        await stream.aread()
        await stream.aclose()
        await client.load_model(CODER)
        await client.unload_model(CODER)
        client.trace_requests()  # spans exported: everything goes through httpx
        await client.chat(chat)
    finally:
        await client.aclose()
    direct, through_httpx = seen.of("direct"), seen.of("httpx")
    direct_paths = {path for path, _, _ in direct}
    assert {"/api/v1/models", "/v1/chat/completions", "/api/v1/models/load", "/api/v1/models/unload"} <= direct_paths
    assert [path for path, _, _ in through_httpx] == ["/v1/chat/completions", "/v1/chat/completions"]  # stream, traced
    for path, connect, pool in direct + through_httpx:
        assert (connect, pool) == (CONNECT_S, CONNECT_S), (path, connect, pool)


async def test_a_deadline_shorter_than_the_connect_limit_shortens_it(mock: MockLMStudio, seen: Seen) -> None:
    client = LMStudioClient.create(mock.base_url, connect_timeout_s=CONNECT_S, read_timeout_s=30, retry=NO_RETRY)
    chat = {"model": QWEN, "messages": [{"role": "user", "content": "hi " + script(answer="ok")}]}
    try:
        await client.chat(chat, timeout_s=0.9)
    finally:
        await client.aclose()
    [(_, connect, pool)] = seen.of("direct")
    assert connect == pool == 0.9
