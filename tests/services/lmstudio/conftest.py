"""Shared pieces of the LM Studio tests: a client on the mock (a real HTTP server), a tool, no retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.lmstudio import LMStudioClient, RetryPolicy
from tests.mock_lmstudio.fixture import MockLMStudio

NO_RETRY = RetryPolicy(retries=0)
TOOLS = [
    {
        "type": "function",
        "function": {"name": "fs__read", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
    }
]


@pytest.fixture
async def lm(mock: MockLMStudio) -> AsyncIterator[LMStudioClient]:
    client = LMStudioClient.create(mock.base_url, read_timeout_s=5, retry=NO_RETRY)
    yield client
    await client.aclose()
