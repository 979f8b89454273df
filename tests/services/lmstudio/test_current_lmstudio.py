"""What current LM Studio does (and what older versions did): its unknown-model and no-model answers, instance ids
that differ from the key, both load-answer shapes, and the catalog refreshed when a cached model has gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.errors import ModelNotFoundError, NoModelLoadedError
from services.lmstudio import LMStudioClient, ModelCatalog
from services.lmstudio.errors import error_for_response
from tests.lmstudio_bodies import BODIES, lmstudio_body, lmstudio_message
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.lmstudio.conftest import NO_RETRY

QWEN = "qwen/qwen3-4b"
CODER = "qwen/qwen3-coder-30b"
HI = [{"role": "user", "content": "hi"}]
INVALID = lmstudio_body("unknown_model", model="gone/x", examples="a/b, c, d")  # (status, body) as recorded
OLD_NOT_FOUND = lmstudio_body("unknown_model_0.3", model="gone/x", listing="a/b\nc")
NO_MODELS = lmstudio_message("no_models_loaded")


def model(key: str, loaded: bool = False, **extra: Any) -> dict[str, Any]:
    """A model entry in the mock's `--models` format."""
    return {"id": key, "type": "llm", "loaded": loaded, "max_context_length": 8192, "tool_use": True, **extra}


@pytest.mark.parametrize(
    ("status", "body", "model", "available"),
    [
        (*INVALID, "gone/x", ["a/b", "c", "d"]),
        (*INVALID, None, ["a/b", "c", "d"]),  # the id is read from the message
        (*OLD_NOT_FOUND, "gone/x", ["a/b", "c"]),
    ],
)
def test_unknown_model_in_both_versions(status: int, body: Any, model: str | None, available: list[str]) -> None:
    error = error_for_response(httpx.Response(status, json=body), model)
    assert isinstance(error, ModelNotFoundError)
    assert error.model == "gone/x" and error.available_models == available and not error.retryable


@pytest.mark.parametrize(
    ("status", "body"),
    [
        lmstudio_body("no_models_loaded"),  # chat: a plain string
        lmstudio_body("no_models_loaded_responses"),  # /v1/responses: an object, "code": null
        (200, {"error": NO_MODELS}),
    ],
)
def test_no_models_loaded_is_its_own_error(status: int, body: Any) -> None:
    error = error_for_response(httpx.Response(status, json=body), QWEN)
    assert isinstance(error, NoModelLoadedError)
    problem = error.problem()
    assert (problem["status"], problem["code"]) == (422, "no_model_loaded")
    assert f"POST /v1/models/{QWEN}/load" in problem["detail"] and problem["load_endpoint"].startswith("POST ")
    assert not error.retryable


def test_every_recorded_lmstudio_error_is_recognised() -> None:
    """The client reads each answer recorded in tests/data/lmstudio_bodies.json as what it means: a changed
    LM Studio text, recorded there, fails here if services/lmstudio/errors.py no longer knows it."""
    expected = {
        "unknown_endpoint": "not_supported_by_lmstudio",
        "unknown_model": "model_not_found",
        "unknown_model_0.3": "model_not_found",
        "no_models_loaded": "no_model_loaded",
        "no_models_loaded_responses": "no_model_loaded",
    }
    assert set(expected) == set(BODIES)
    values = {"model": "gone/x", "examples": "a/b, c, d", "listing": "a/b\nc", "method": "GET", "path": "/x"}
    for name, code in expected.items():
        status, body = lmstudio_body(name, **values)
        error = error_for_response(httpx.Response(status, json=body), "gone/x")
        assert error is not None and error.code == code, (name, error)


def test_a_plain_400_is_not_a_missing_model() -> None:
    error = error_for_response(httpx.Response(400, json={"error": {"message": "'messages' field is required"}}))
    assert error is not None and error.code == "upstream_rejected"


@pytest.fixture
async def client(mock: MockLMStudio) -> AsyncIterator[LMStudioClient]:
    lm = LMStudioClient.create(mock.base_url, read_timeout_s=5, retry=NO_RETRY)
    yield lm
    await lm.aclose()


@pytest.fixture
async def with_catalog(mock: MockLMStudio) -> AsyncIterator[tuple[ModelCatalog, LMStudioClient]]:
    """A client built with its catalog: it tells the catalog when LM Studio says a model is missing."""
    catalog, lm = ModelCatalog.over(
        lambda hook: LMStudioClient.create(mock.base_url, read_timeout_s=5, retry=NO_RETRY, on_model_error=hook)
    )
    yield catalog, lm
    await lm.aclose()


async def listings(mock: MockLMStudio) -> int:
    return len([r for r in await mock.requests() if r["path"].endswith("/models")])


@pytest.mark.parametrize("version", ["current", "0.3"])
async def test_model_gone_after_caching_refreshes_the_catalog_once(
    with_catalog: tuple[ModelCatalog, LMStudioClient], mock: MockLMStudio, version: str
) -> None:
    catalog, client = with_catalog
    assert client.on_model_error is not None  # a catalog over a client hears of its missing models
    assert (await catalog.resolve(CODER)).id == CODER  # cached with CODER in it
    await mock.configure(lmstudio=version, models=[model(QWEN, loaded=True), model("other/model")])
    before = await listings(mock)
    results = await asyncio.gather(
        *(client.chat({"model": CODER, "messages": HI}) for _ in range(5)), return_exceptions=True
    )
    for error in results:
        assert isinstance(error, ModelNotFoundError)
        assert error.model == CODER and error.available_models == [QWEN, "other/model"]  # the fresh list
    assert await listings(mock) == before + 1  # five failures, one refresh
    with pytest.raises(ModelNotFoundError):  # and now the catalog knows without asking LM Studio
        await catalog.resolve(CODER)
    assert await listings(mock) == before + 1


async def test_no_model_loaded_invalidates_the_catalog(
    with_catalog: tuple[ModelCatalog, LMStudioClient], mock: MockLMStudio
) -> None:
    catalog, client = with_catalog
    await catalog.snapshot()
    await mock.configure(jit=False, models=[model(QWEN), model(CODER)])
    with pytest.raises(NoModelLoadedError) as info:
        await client.chat({"model": CODER, "messages": HI})
    assert info.value.model == CODER and info.value.status == 422
    assert not any(m.loaded for m in (await catalog.snapshot()).models)  # listed afresh


async def test_unload_uses_the_instance_ids(client: LMStudioClient, mock: MockLMStudio) -> None:
    await mock.configure(models=[model(QWEN, loaded=True, instance_id=f"{QWEN}:2"), model(CODER)])
    await client.list_models()
    assert await client.loaded_instances(QWEN) == [f"{QWEN}:2"]
    assert (await client.load_model(QWEN))["instance_id"] == f"{QWEN}:3"  # a second instance
    answer = await client.unload_model(QWEN)
    assert answer == {"instance_id": f"{QWEN}:2", "instance_ids": [f"{QWEN}:2", f"{QWEN}:3"], "status": "unloaded"}
    unloads = [r["body"] for r in await mock.requests() if r["path"] == "/api/v1/models/unload"]
    assert unloads == [{"instance_id": f"{QWEN}:2"}, {"instance_id": f"{QWEN}:3"}]
    assert await client.loaded_instances(QWEN) == []
    assert (await client.unload_model(CODER))["status"] == "not-loaded"  # nothing to unload: left as it is


@pytest.mark.parametrize("version", ["current", "0.3"])
async def test_both_load_answer_shapes(client: LMStudioClient, mock: MockLMStudio, version: str) -> None:
    await mock.configure(lmstudio=version)
    answer = await client.load_model(CODER, ttl=60)
    assert answer == {"type": "llm", "instance_id": CODER, "load_time_seconds": 0.1, "status": "loaded"}
    [load] = [r for r in await mock.requests() if r["path"] == "/api/v1/models/load"]
    assert load["body"] == {"model": CODER, "ttl": 60}


async def test_a_listed_but_unloaded_model_says_how_to_load_it(
    with_catalog: tuple[ModelCatalog, LMStudioClient], mock: MockLMStudio
) -> None:
    _, client = with_catalog
    await mock.configure(jit=False)  # QWEN is loaded, CODER is not, and LM Studio will not load it
    with pytest.raises(ModelNotFoundError) as info:
        await client.chat({"model": CODER, "messages": HI})
    assert CODER in info.value.available_models
    assert "not loaded" in info.value.detail and f"POST /v1/models/{CODER}/load" in info.value.detail
