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
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fully started app (lifespan run) in-process."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge", **client_kwargs) as client:
            yield client


@pytest.fixture
async def client(mock: MockLMStudio) -> AsyncIterator[httpx.AsyncClient]:
    """An app client whose LM Studio is the shared mock."""
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as c:
        yield c
