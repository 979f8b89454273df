"""Shared fixtures: a real mock LM Studio process, settings pointing at it, an app client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings
from tests.mock_lmstudio.fixture import MockLMStudio, start_mock


@pytest.fixture(scope="session")
async def mock_server() -> AsyncIterator[MockLMStudio]:
    mock = await start_mock()
    yield mock
    await mock.stop()


@pytest.fixture
async def mock(mock_server: MockLMStudio) -> MockLMStudio:
    """The shared mock LM Studio, reset before each test."""
    await mock_server.reset()
    return mock_server


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: no .env file, fast retries, no MCP config unless given."""
    values: dict[str, Any] = {"lmstudio_retry_backoff_s": 0.01, "lmstudio_retry_backoff_max_s": 0.05}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fully started app (lifespan run) in-process."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge", **client_kwargs) as client:
            yield client


@contextlib.asynccontextmanager
async def served(settings: Settings, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn server on a free port (in this event loop); a client for it."""
    import asyncio

    import uvicorn

    from tests.mock_lmstudio.fixture import free_port

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", **client_kwargs) as client:
            yield client
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def client(mock: MockLMStudio) -> AsyncIterator[httpx.AsyncClient]:
    """An app client whose LM Studio is the shared mock."""
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as c:
        yield c


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
NODE_SERVERS = REPO / "node_modules" / "@modelcontextprotocol"


def mcp_servers_json(files_dir: str) -> dict[str, Any]:
    """An mcp.json (as a dict) with real servers: time, filesystem, memory, everything, and our fault server."""
    import sys

    def node(package: str, *args: str) -> dict[str, Any]:
        return {"command": "node", "args": [str(NODE_SERVERS / f"server-{package}" / "dist" / "index.js"), *args]}

    return {
        "mcpServers": {
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
            "filesystem": node("filesystem", files_dir),
            "memory": {**node("memory"), "env": {"MEMORY_FILE_PATH": f"{files_dir}/memory.jsonl"}},
            "everything": node("everything"),
            "fault": {"command": sys.executable, "args": ["-m", "tests.mcp_servers.fault_server"], "cwd": str(REPO)},
        }
    }


def write_mcp_json(path: Any, files_dir: str, **extra: Any) -> Any:
    import json

    config = mcp_servers_json(files_dir)
    config["mcpServers"].update(extra)
    path.write_text(json.dumps(config))
    return path
