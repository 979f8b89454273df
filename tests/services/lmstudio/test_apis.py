"""The host APIs as data: one entry per kind of server, detected in order, and the table in the docs."""

from __future__ import annotations

import httpx
import pytest

from services.errors import LLMError
from services.lmstudio import LMStudioClient
from services.lmstudio.apis import API_V0, API_V1, HOST_APIS, LLAMACPP, OPENAI
from tests.helpers import REPO
from tests.services.lmstudio.conftest import NO_RETRY


def test_each_api_is_one_entry_richest_first() -> None:
    assert HOST_APIS == (API_V1, API_V0, LLAMACPP, OPENAI)
    assert len({api.name for api in HOST_APIS}) == len(HOST_APIS)
    assert [api.name for api in HOST_APIS if api.loads_models] == ["api-v1"]
    assert [api.name for api in HOST_APIS if not api.reports_load_state] == ["openai"]
    assert [api.name for api in HOST_APIS if api.props_path or api.tokenize_path] == ["llamacpp"]


def test_the_docs_table_lists_every_api() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text[text.index("### The host APIs") :]
    for api in HOST_APIS:
        assert f"`{api.name}`" in table and api.listing_path in table


async def test_a_path_two_apis_share_is_asked_once_and_load_is_refused_by_capability() -> None:
    """A plain OpenAI server: /v1/models is fetched once for llama.cpp's parser and OpenAI's."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        return httpx.Response(404, text="Not Found")

    http = httpx.AsyncClient(base_url="http://openai", transport=httpx.MockTransport(answer))
    client = LMStudioClient(http, retry=NO_RETRY)
    try:
        await client.list_models()
    finally:
        await client.aclose()
    assert seen == ["/api/v1/models", "/api/v0/models", "/v1/models"]
    assert client.api is OPENAI and client.models_api == "openai" and not client.reports_load_state


@pytest.mark.parametrize(("status", "absent"), [(401, False), (403, False), (400, False), (500, False), (404, True)])
async def test_only_a_missing_path_marks_an_api_absent(status: int, absent: bool) -> None:
    """A probe's 401, 403, other 4xx or 5xx is an error that decides nothing (the next listing detects again); a
    404 (405, LM Studio's "Unexpected endpoint") says the API is not there (issue 29, item 4)."""
    failures = [status]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/models":
            if failures:
                return httpx.Response(failures.pop(), json={"error": "no"})
            return httpx.Response(200, json={"models": [{"type": "llm", "key": "m", "loaded_instances": []}]})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        return httpx.Response(404, text="Not Found")

    http = httpx.AsyncClient(base_url="http://lm", transport=httpx.MockTransport(answer))
    client = LMStudioClient(http, retry=NO_RETRY)
    try:
        if absent:
            await client.list_models()
            assert client.api is OPENAI
            return
        with pytest.raises(LLMError, match=str(status)):
            await client.list_models()
        assert client.api is None  # nothing decided
        await client.list_models()
        assert client.api is API_V1 and client.reports_load_state
    finally:
        await client.aclose()
