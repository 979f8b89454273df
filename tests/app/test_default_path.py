"""The suite runs the production default LM Studio path: answers read whole go straight on aiohttp.

tests/conftest.py's `span_export_left_off` fails any module that leaves span export on for the process
(which would switch every later gateway's LM Studio client to the traced httpx path); the test here shows
what a gateway built the default way, as the rest of the suite builds them, does with its calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from httpx_aiohttp import AiohttpTransport

from app.gateway import BridgeState
from app.main import create_app
from tests.conftest import make_settings, span_export_state
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(60)


def counting(calls: list[str], name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await method(*args, **kwargs)

    return counted


async def test_a_default_gateway_sends_buffered_lmstudio_calls_on_aiohttp(
    mock: MockLMStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert span_export_state() == (False, ())  # what every module of the suite starts and ends with
    app = create_app(make_settings(lmstudio_base_url=mock.base_url))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://bridge") as client,
    ):
        state: BridgeState = app.state.bridge
        [lmstudio] = state.lmstudio.clients
        wire = lmstudio.wire
        assert isinstance(wire.transport, AiohttpTransport) and wire.direct
        calls: list[str] = []
        monkeypatch.setattr(wire, "_direct", counting(calls, "aiohttp", wire._direct))
        monkeypatch.setattr(
            wire.transport, "handle_async_request", counting(calls, "httpx", wire.transport.handle_async_request)
        )
        monkeypatch.setattr(lmstudio.http, "send", counting(calls, "httpx", lmstudio.http.send))

        chat = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        run = await client.post("/v1/autonomous", json={"task": "hi", "mcp_servers": []})
        assert run.status_code == 200 and run.json()["status"] == "completed", run.text

    # the model list, the pass-through chat and the run's one chat: all on aiohttp, none through httpx
    assert "httpx" not in calls and len(calls) >= 3, calls
    paths = [r["path"] for r in await mock.requests()]
    assert paths.count("/v1/chat/completions") == 2, paths
