"""A recording reverse proxy in front of the real engine: the gateway talks to it as to LM Studio, and a test
reads exactly what the engine was asked and what it answered.

Only whole (non-streamed) answers are relayed; the agent loop's calls are such. A streamed request would be
buffered, so tests that watch streaming or disconnects talk to the engine without it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from tests.processes import serve_in_loop

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


@dataclass
class Exchange:
    """One `POST /v1/chat/completions` the engine got (`request`, as JSON) and its answer."""

    request: dict[str, Any]
    status: int
    response: dict[str, Any]


@dataclass
class Recorder:
    """An ASGI app that forwards every request to `upstream` and keeps the chat completions it saw."""

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=300)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode().lower() not in HOP_HEADERS}
        upstream = await self._client.request(
            scope["method"], scope["path"], params=scope["query_string"].decode(), content=body, headers=headers
        )
        if scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
            self.exchanges.append(Exchange(json.loads(body), upstream.status_code, upstream.json()))
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status_code,
                "headers": [
                    (k.encode(), v.encode()) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
                ],
            }
        )
        await send({"type": "http.response.body", "body": upstream.content})

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@contextlib.asynccontextmanager
async def recording_proxy(upstream: str) -> AsyncIterator[tuple[str, Recorder]]:
    """(base URL, recorder) of a proxy to `upstream` on a free 127.0.0.1 port, served in this event loop."""
    recorder = Recorder(upstream)
    try:
        async with serve_in_loop(recorder, "the recording proxy", 30) as url:
            yield url, recorder
    finally:
        await recorder.aclose()
