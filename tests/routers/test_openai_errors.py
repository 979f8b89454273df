"""Errors on the OpenAI-compatible routes in OpenAI's shape, through the real openai SDK: its exception says our
message and code, and `x-should-retry` keeps it from retrying what cannot pass."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import make_settings, served
from tests.helpers import TIME_CALL, script
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio

pytestmark = pytest.mark.timeout(120)
MODEL = "qwen/qwen3-4b"
CHAT = "/v1/chat/completions"


def user(content: str) -> Any:
    return [{"role": "user", "content": content}]


def counting_sdk(base_url: str, max_retries: int) -> tuple[openai.AsyncOpenAI, list[str]]:
    """An SDK client with its default retry policy (max_retries) and a list of the requests it sent."""
    sent: list[str] = []

    async def record(request: Any) -> None:
        sent.append(f"{request.method} {request.url.path}")

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [record]})
    sdk = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=max_retries, http_client=http)
    return sdk, sent


async def test_sdk_exception_for_an_unknown_model_carries_our_message(live: httpx.AsyncClient) -> None:
    sdk, sent = counting_sdk(str(live.base_url), max_retries=2)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk.chat.completions.create(model="nope/x", messages=user("hi"))
    error = caught.value
    assert "Model 'nope/x' is not available. Available models:" in str(error) and MODEL in str(error)
    assert (error.code, error.param, error.type) == ("model_not_found", "model", "invalid_request_error")
    assert sent == ["POST /v1/chat/completions"], "a 422 is final: no retry"
    # the problem document's members sit beside OpenAI's `error` object
    response = await live.post("/v1/chat/completions", json={"model": "nope/x", "messages": user("hi")})
    body = response.json()
    assert response.headers["x-should-retry"] == "false"
    assert body["code"] == "model_not_found" and MODEL in body["available_models"]
    assert body["error"] == {
        "message": body["detail"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "param"),
    [
        ("POST", "/v1/completions", {"model": "nope/x", "prompt": "a"}, 422, "model_not_found", "model"),
        ("POST", "/v1/embeddings", {"model": MODEL, "input": "a"}, 422, "validation_error", None),
        ("POST", CHAT, {"messages": [], "mcp_servers": ["time"]}, 422, "validation_error", "messages"),
        ("POST", CHAT, {"messages": user("a"), "mcp_servers": ["nope"]}, 422, "mcp_server_not_found", "mcp_servers"),
        ("POST", "/v1/models/nope/x/load", None, 404, "model_not_found", "model"),
    ],
)
async def test_every_openai_route_answers_the_openai_shape(
    live: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
    param: str | None,
) -> None:
    response = await live.request(method, path, json=body)
    assert response.status_code == status, response.text
    problem = response.json()
    error = problem["error"]
    assert error["message"] == problem["detail"] and error["code"] == problem["code"] == code
    assert error["param"] == param
    expected_type = "not_found_error" if status == 404 else "invalid_request_error"
    assert error["type"] == expected_type and response.headers["x-should-retry"] == "false"


async def test_other_routes_keep_the_plain_problem_document(live: httpx.AsyncClient) -> None:
    response = await live.post("/v1/autonomous", json={"task": "hi", "model": "nope/x"})
    assert response.status_code == 422 and response.json()["code"] == "model_not_found"
    assert "error" not in response.json() and response.headers["x-should-retry"] == "false"


async def test_unauthorized_on_an_openai_route_is_openai_shaped(mock: MockLMStudio) -> None:
    settings = make_settings(lmstudio_base_url=mock.base_url, api_keys="k1")
    async with served(settings) as client:
        sdk, sent = counting_sdk(str(client.base_url), max_retries=2)
        sdk.api_key = "wrong"
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.models.list()
    assert caught.value.code == "unauthorized" and caught.value.type == "authentication_error"
    assert sent == ["GET /v1/models"]


async def test_501_is_not_retried_by_the_sdk() -> None:
    """LM Studio without the Responses API: 501 stays 501, said to be final, so the SDK sends one request."""
    async with mock_lmstudio("--api", "v0") as old, served(make_settings(lmstudio_base_url=old.base_url)) as client:
        sdk, sent = counting_sdk(str(client.base_url), max_retries=2)
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.responses.create(model=MODEL, input="hi")
    assert caught.value.status_code == 501 and caught.value.code == "not_supported_by_lmstudio"
    assert caught.value.type == "server_error" and caught.value.message.startswith("Error code: 501 - ")
    assert str(caught.value) != "Error code: 501", "the exception says why"
    assert sent == ["POST /v1/responses"]


async def test_overload_is_retried_by_the_sdk(mock: MockLMStudio) -> None:
    """429 and 503 (with Retry-After) are the statuses worth a retry: `x-should-retry: true`."""
    settings = make_settings(lmstudio_base_url=mock.base_url, lmstudio_retries=0)
    fault = {"kind": "status", "status": 429, "retry_after": 1, "path": "/v1/completions"}
    await mock.faults(fault)
    async with served(settings) as client:
        response = await client.post("/v1/completions", json={"model": MODEL, "prompt": "a"})
        assert response.status_code == 429 and response.headers["x-should-retry"] == "true", response.text
        assert response.json()["error"]["type"] == "rate_limit_error" and response.headers["retry-after"] == "1"
        await mock.faults(fault)
        sdk, sent = counting_sdk(str(client.base_url), max_retries=2)
        result = await sdk.completions.create(model=MODEL, prompt="a")
    assert result.choices[0].text and sent == ["POST /v1/completions"] * 2


async def test_a_failed_streamed_mcp_run_raises_with_our_message(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "status", "status": 400, "body": {"error": "bad request"}, "path": CHAT})
    sdk, _ = counting_sdk(str(live.base_url), max_retries=0)
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=user("What time is it? " + script(calls=[[TIME_CALL]])),
        stream=True,
        extra_body={"mcp_servers": ["time"]},
    )
    with pytest.raises(openai.APIError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code == "upstream_rejected" and "LM Studio" in caught.value.message
