"""Model listing: each of LM Studio's three model-list APIs detected (once) and normalised."""

from __future__ import annotations

import httpx
import pytest

from services.lmstudio import LMStudioClient, ModelCatalog
from services.lmstudio.apis import HOST_APIS, LLAMACPP, OPENAI
from services.lmstudio.listing import ModelInfo
from tests.lmstudio_bodies import lmstudio_body
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


UNKNOWN_ENDPOINT = lmstudio_body("unknown_endpoint", method="GET", path="/api/v1/models")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"error": "not found"}),
        httpx.Response(200, text="<html>not JSON</html>"),
        httpx.Response(UNKNOWN_ENDPOINT[0], json=UNKNOWN_ENDPOINT[1]),
    ],
    ids=["4xx", "not-json", "unexpected-endpoint"],
)
def test_an_answer_without_the_api_means_not_this_api(response: httpx.Response) -> None:
    assert all(api.models(response) is None for api in HOST_APIS)


# --- llama.cpp's llama-server: only /v1/models, with entries that say more than OpenAI's ----------------

# GET /v1/models of llama-server (single model, --alias, --ctx-size 4096), as measured (tests/real_engine)
LLAMACPP_ENTRY = {
    "id": "smollm2-135m-instruct",
    "aliases": ["smollm2-135m-instruct"],
    "tags": [],
    "object": "model",
    "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
    "created": 1795939793,
    "owned_by": "llamacpp",
    "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx": 4096, "n_ctx_train": 8192, "n_params": 134515008},
}
LLAMACPP_LIST = {
    "models": [{"name": "smollm2-135m-instruct", "model": "smollm2-135m-instruct", "capabilities": ["completion"]}],
    "object": "list",
    "data": [LLAMACPP_ENTRY],
}


def openai_models(body: object) -> list[ModelInfo]:
    """The models of a `/v1/models` answer as the client reads them: llama.cpp's list if it is one, else OpenAI's."""
    for api in (LLAMACPP, OPENAI):
        models = api.models(httpx.Response(200, json=body))
        if models is not None:
            return models
    raise AssertionError("neither llama.cpp's nor OpenAI's list")


def test_llamacpp_model_is_loaded_with_its_context_length() -> None:
    """`meta.n_ctx` is the context it runs with, `meta.n_ctx_train` the most the model takes."""
    [model] = openai_models(LLAMACPP_LIST)
    assert model == ModelInfo(
        id="smollm2-135m-instruct", type="llm", loaded=True, max_context_length=8192, loaded_context_length=4096
    )


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "m", "object": "model", "owned_by": "llamacpp"},
        {"id": "m", "object": "model", "owned_by": "someone", "meta": {"n_ctx": 2048}},
        {"id": "m", "object": "model", "meta": {"n_ctx": 2048}},
    ],
    ids=["owned_by-only", "meta-only", "meta-no-owner"],
)
def test_llamacpp_is_recognised_by_owner_or_meta(entry: dict[str, object]) -> None:
    [model] = openai_models({"object": "list", "data": [entry]})
    assert model.loaded
    assert model.max_context_length == model.loaded_context_length == (2048 if "meta" in entry else None)


@pytest.mark.parametrize("n_ctx", [None, 0, -1, "4096", True, 4.5])
def test_llamacpp_context_length_only_from_a_positive_integer(n_ctx: object) -> None:
    [model] = openai_models({"data": [{**LLAMACPP_ENTRY, "meta": {"n_ctx": n_ctx}}]})
    assert model.loaded and model.max_context_length is None and model.loaded_context_length is None


@pytest.mark.parametrize(("value", "loaded"), [("loaded", True), ("loading", False), ("unloaded", False)])
def test_llamacpp_router_mode_status_decides_loaded(value: str, loaded: bool) -> None:
    entry = {"id": "m", "object": "model", "owned_by": "llamacpp", "status": {"value": value, "args": []}}
    [model] = openai_models({"data": [entry]})
    assert model.loaded is loaded


def test_llamacpp_image_input_is_a_vlm_and_embedding_names_stay_embeddings() -> None:
    vision = {**LLAMACPP_ENTRY, "id": "gemma-3-4b", "architecture": {"input_modalities": ["text", "image"]}}
    embed = {**LLAMACPP_ENTRY, "id": "nomic-embed-text", "architecture": {"input_modalities": ["text", "image"]}}
    by_id = {m.id: m for m in openai_models({"data": [vision, embed]})}
    assert by_id["gemma-3-4b"].type == "vlm"
    assert by_id["nomic-embed-text"].type == "embedding"


def test_plain_openai_entries_are_unchanged() -> None:
    """LM Studio's /v1/models (no meta, another owner) still says nothing about state or context."""
    entries = [
        {"id": "qwen/qwen3-4b", "object": "model", "owned_by": "organization_owner"},
        {"id": "text-embedding-nomic-embed-text-v1.5", "object": "model", "owned_by": "organization_owner"},
        {"id": "x", "object": "model", "meta": {"other": 1}},
    ]
    assert openai_models({"object": "list", "data": entries}) == [
        ModelInfo(id="qwen/qwen3-4b", type="llm", loaded=False),
        ModelInfo(id="text-embedding-nomic-embed-text-v1.5", type="embedding", loaded=False),
        ModelInfo(id="x", type="llm", loaded=False),
    ]


async def test_client_on_llamacpp_falls_back_to_v1_models_and_the_model_is_the_default() -> None:
    """Through the client and the catalog: /api/v1 and /api/v0 are 404, /v1/models is llama.cpp's."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=LLAMACPP_LIST)
        return httpx.Response(404, text="File Not Found")

    http = httpx.AsyncClient(base_url="http://llama", transport=httpx.MockTransport(answer))
    client = LMStudioClient(http, retry=NO_RETRY)
    try:
        catalog = ModelCatalog(client.list_models)
        [entry] = catalog.entries(await catalog.snapshot())
    finally:
        await client.aclose()
    assert seen == ["/api/v1/models", "/api/v0/models", "/v1/models", "/props"]  # /props: 404 here, not used
    assert client.models_api == "llamacpp" and client.api is LLAMACPP
    assert (entry.id, entry.state, entry.max_context_length, entry.loaded_context_length, entry.default) == (
        "smollm2-135m-instruct",
        "loaded",
        8192,
        4096,
        True,
    )


# GET /props of llama-server (--ctx-size 4096 --parallel 2, no --kv-unified: each slot gets half), trimmed
LLAMACPP_PROPS = {"default_generation_settings": {"n_ctx": 2048, "params": {}}, "total_slots": 2}


@pytest.mark.parametrize(
    ("props", "window"),
    [(LLAMACPP_PROPS, 2048), ({"default_generation_settings": {}}, 4096), ("not an object", 4096)],
    ids=["slot-share", "no-n_ctx", "not-json-object"],
)
async def test_llamacpp_props_give_one_requests_share_of_the_context(props: object, window: int) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=LLAMACPP_LIST)
        if request.url.path == "/props":
            return httpx.Response(200, json=props)
        return httpx.Response(404, text="File Not Found")

    client = LMStudioClient(httpx.AsyncClient(base_url="http://llama", transport=httpx.MockTransport(answer)))
    try:
        [model] = await client.list_models()
    finally:
        await client.aclose()
    assert (model.max_context_length, model.loaded_context_length) == (8192, window)


def test_router_mode_lists_no_window_for_an_unloaded_model() -> None:
    entry = {**LLAMACPP_ENTRY, "status": {"value": "unloaded"}}
    [model] = openai_models({"data": [entry]})
    assert not model.loaded and model.loaded_context_length is None and model.max_context_length == 8192
