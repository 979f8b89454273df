"""The serving thread tells sniffio it runs asyncio (app/server.py): anyio asks on every stream step of the MCP
SDK, and sniffio would otherwise sniff with asyncio.current_task() each time."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sniffio
import uvicorn
from fastapi import FastAPI

from app.server import GracefulServer, asyncio_in_this_thread


def in_a_thread(work: Any) -> Any:
    """`work()` run in a new thread (sniffio's answer is per thread), its result or exception returned."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_outcome(work)))
    thread.start()
    thread.join()
    return out[0]


def _outcome(work: Any) -> Any:
    try:
        return work()
    except Exception as exc:  # the exception is the outcome looked at
        return exc


def test_asyncio_is_named_in_this_thread_only_while_inside() -> None:
    def work() -> tuple[str, str | None, bool]:
        with asyncio_in_this_thread():
            inside = sniffio.current_async_library()
            elsewhere = in_a_thread(sniffio.current_async_library)
        return inside, sniffio.thread_local.name, isinstance(elsewhere, sniffio.AsyncLibraryNotFoundError)

    inside, after, elsewhere_unknown = in_a_thread(work)
    assert inside == "asyncio"
    assert after is None  # put back
    assert elsewhere_unknown  # another thread is not told


def test_a_value_set_before_is_put_back() -> None:
    def work() -> tuple[str, str | None]:
        sniffio.thread_local.name = "trio"
        with asyncio_in_this_thread():
            inside = sniffio.current_async_library()
        return inside, sniffio.thread_local.name

    assert in_a_thread(work) == ("asyncio", "trio")


async def test_the_server_serves_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    async def serve(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.append(sniffio.thread_local.name)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    before = sniffio.thread_local.name
    app = FastAPI()
    server = GracefulServer(app, uvicorn.Config(app), 1.0)
    await server.serve()
    assert seen == ["asyncio"]
    assert sniffio.thread_local.name == before
