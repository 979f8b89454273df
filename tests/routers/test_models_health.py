"""GET /v1/models, /healthz, /readyz and problem documents through HTTP (ASGITransport + lifespan)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio
from tests.processes import free_port


async def test_models_list_openai_shape_with_extras(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    qwen = by_id["qwen/qwen3-4b"]
    assert qwen == {
        "id": "qwen/qwen3-4b",
        "object": "model",
        "owned_by": "lmstudio",
        "type": "llm",
        "state": "loaded",
        "max_context_length": 32768,
        "loaded_context_length": 4096,  # LM Studio's default, as the mock lists it
        "tool_use": True,
        "default": True,
        "hosts": [{"name": mock.base_url, "state": "loaded", "loaded_context_length": 4096}],
        "tool_score": None,  # never evaluated (GET /v1/evals)
    }
    coder = by_id["qwen/qwen3-coder-30b"]
    assert coder["loaded_context_length"] is None and coder["hosts"][0]["loaded_context_length"] is None
    assert by_id["text-embedding-nomic-embed-text-v1.5"]["type"] == "embedding"
    assert [m["id"] for m in body["data"] if m["default"]] == ["qwen/qwen3-4b"]


async def test_models_list_is_cached(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    for _ in range(5):
        assert (await client.get("/v1/models")).status_code == 200
    assert len([r for r in await mock.requests() if r["path"].endswith("/models")]) == 1


async def test_default_model_setting_marks_default(mock: MockLMStudio) -> None:
    settings = make_settings(
        lmstudio_base_url=mock.base_url, default_model="coding", model_aliases="coding=qwen/qwen3-coder-30b"
    )
    async with app_client(settings) as client:
        body = (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"] if m["default"]] == ["qwen/qwen3-coder-30b"]
    assert body["aliases"] == {"coding": "qwen/qwen3-coder-30b"}


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["lmstudio"]["ok"] is True


async def test_lmstudio_unreachable() -> None:
    settings = make_settings(lmstudio_base_url=f"http://127.0.0.1:{free_port()}")
    async with app_client(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["lmstudio"]["code"] == "upstream_unavailable"
        models = await client.get("/v1/models")
    assert models.status_code == 503
    assert models.headers["content-type"] == "application/problem+json"
    problem = models.json()
    assert problem["code"] == "upstream_unavailable"
    assert problem["status"] == 503 and problem["title"] and problem["detail"] and problem["type"]


async def test_upstream_5xx_surfaces_without_falling_back_to_another_api(mock: MockLMStudio) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, model_cache_ttl_s=0, lmstudio_retries=0)
    async with app_client(settings) as client:
        assert (await client.get("/v1/models")).status_code == 200
        await mock.faults({"kind": "status", "status": 500})
        response = await client.get("/v1/models")
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"


async def test_stale_model_list_is_served_and_flagged_when_lmstudio_goes_away() -> None:
    async with mock_lmstudio() as own:
        settings = make_settings(lmstudio_base_url=own.base_url, model_cache_ttl_s=0)
        async with app_client(settings) as client:
            assert (await client.get("/v1/models")).json()["stale"] is False
            await own.stop()
            response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json()["stale"] is True
    assert response.headers["x-bridge-stale"] == "true"
    assert "qwen/qwen3-4b" in [m["id"] for m in response.json()["data"]]


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = await client.delete("/v1/models")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


def listed(key: str, **extra: object) -> dict[str, object]:
    """A loaded model in the mock's `--models` format."""
    return {"id": key, "type": "llm", "loaded": True, "max_context_length": 32768, "tool_use": True, **extra}


@pytest.mark.parametrize(("api", "lmstudio"), [("v1", "current"), ("v0", "0.3"), ("llamacpp", None)])
async def test_models_list_shows_the_loaded_context_of_each_host_api(api: str, lmstudio: str | None) -> None:
    """LM Studio 0.4 (`/api/v1`), 0.3 (`/api/v0`) and llama.cpp (`meta.n_ctx`, `/props`) each tell it."""
    async with mock_lmstudio("--api", api, lmstudio=lmstudio) as mock:
        await mock.configure(models=[listed("smol", context_length=2048)])
        async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as client:
            [model] = (await client.get("/v1/models")).json()["data"]
    assert (model["max_context_length"], model["loaded_context_length"]) == (32768, 2048)
    assert model["hosts"][0]["loaded_context_length"] == 2048


async def test_the_loaded_context_of_several_hosts_is_the_smallest() -> None:
    async with mock_lmstudio() as big, mock_lmstudio("--api", "v0", lmstudio="0.3") as small:
        await big.configure(models=[listed("m", context_length=8192)])
        await small.configure(models=[listed("m", context_length=2048)])
        settings = make_settings(lmstudio_base_urls=f"{big.base_url},{small.base_url}")
        async with app_client(settings) as client:
            [model] = (await client.get("/v1/models")).json()["data"]
    assert model["loaded_context_length"] == 2048
    assert [h["loaded_context_length"] for h in model["hosts"]] == [8192, 2048]
