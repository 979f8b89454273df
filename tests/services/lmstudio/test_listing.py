"""Model listing: each of LM Studio's three model-list APIs detected (once) and normalised."""

from __future__ import annotations

import httpx
import pytest

from services.lmstudio import LMStudioClient
from services.lmstudio.listing import MODEL_APIS
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio
from tests.services.lmstudio.conftest import NO_RETRY


@pytest.mark.parametrize(("api", "detected"), [("v1", "api-v1"), ("v0", "api-v0"), ("openai", "openai")])
async def test_model_list_detects_each_api_and_normalises(api: str, detected: str) -> None:
    async with mock_lmstudio("--api", api) as mock:
        client = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
        models = await client.list_models()
        await client.aclose()
    by_id = {m.id: m for m in models}
    assert client.models_api == detected
    assert models[0].id == "text-embedding-nomic-embed-text-v1.5"
    assert by_id["text-embedding-nomic-embed-text-v1.5"].type == "embedding"
    assert "qwen/qwen3-4b" in by_id
    if api != "openai":  # the OpenAI list says nothing about state or capabilities
        assert by_id["qwen/qwen3-4b"].loaded and by_id["qwen/qwen3-4b"].tool_use
        assert not by_id["qwen/qwen3-coder-30b"].loaded
        assert by_id["google/gemma-3-4b"].type == "vlm"
        assert by_id["qwen/qwen3-4b"].max_context_length == 32768


async def test_detection_happens_once(lm: LMStudioClient, mock: MockLMStudio) -> None:
    await lm.list_models()
    await lm.list_models()
    paths = [r["path"] for r in await mock.requests()]
    assert paths == ["/api/v1/models", "/api/v1/models"]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"error": "not found"}),
        httpx.Response(200, text="<html>not JSON</html>"),
        httpx.Response(200, json={"error": "Unexpected endpoint or method. (GET /api/v1/models)"}),
    ],
    ids=["4xx", "not-json", "unexpected-endpoint"],
)
def test_an_answer_without_the_api_means_not_this_api(response: httpx.Response) -> None:
    assert all(api.models(response) is None for api in MODEL_APIS)
