"""The chat pass-through (JSON and stream) answers an engine's overflow, in each of its shapes, with one problem:
422 `context_exceeded` naming the numbers the engine gave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.mock_lmstudio.fixture import MockLMStudio

QWEN = "qwen/qwen3-4b"
CHAT = "/v1/chat/completions"


@pytest.fixture
async def gateway(mock: MockLMStudio, mcp_json: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json))
    async with app_client(settings, timeout=60) as client:
        yield client


def holding(tokens: int, overflow: str) -> list[dict[str, Any]]:
    """QWEN holding `tokens` while listing 4096, in the mock's `--models` format."""
    qwen = {"id": QWEN, "type": "llm", "loaded": True, "max_context_length": 32768, "tool_use": True}
    return [{**qwen, "context_length": tokens, "listed_context": 4096, "overflow": overflow}]


# an empty STREAM is passed through as it comes (its first bytes go to the client before it is known to be empty)
@pytest.mark.parametrize(
    ("shape", "stream"),
    [(shape, False) for shape in ("n_keep_400", "n_keep_200", "empty_200", "llama_400")]
    + [(shape, True) for shape in ("n_keep_400", "n_keep_200", "llama_400")],
)
async def test_pass_through_overflow_is_context_exceeded(
    gateway: httpx.AsyncClient, mock: MockLMStudio, shape: str, stream: bool
) -> None:
    await mock.configure(models=holding(50, shape))
    body = {"model": QWEN, "messages": [{"role": "user", "content": "x" * 400}], "stream": stream}
    response = await gateway.post(CHAT, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "context_exceeded" and problem["shape"] == shape
    assert problem["n_ctx"] == (None if shape == "empty_200" else 50)
    assert problem["n_prompt"] == -(-len('[{"role": "user", "content": "' + "x" * 400 + '"}]') // 4)
    assert len([r for r in await mock.requests() if r["path"] == CHAT]) == 1  # not retried


async def test_models_list_says_what_the_engine_lists(gateway: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.configure(models=holding(50, "n_keep_400"))
    [model] = (await gateway.get("/v1/models")).json()["data"]
    assert model["loaded_context_length"] == 4096
