"""LM Studio's failures (statuses, broken bodies, timeouts, refused connections, quirks) mapped to domain errors."""

from __future__ import annotations

import pytest

from services import errors
from services.lmstudio import LMStudioClient
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio
from tests.processes import free_port
from tests.services.lmstudio.conftest import NO_RETRY


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "status", "status": 500}, errors.LLMResponseError),
        ({"kind": "status", "status": 502}, errors.LLMResponseError),
        ({"kind": "status", "status": 503}, errors.LLMResponseError),
        ({"kind": "status", "status": 504}, errors.LLMResponseError),
        ({"kind": "status", "status": 429, "retry_after": 7}, errors.LLMRateLimitError),
        ({"kind": "status", "status": 400}, errors.LLMValidationError),
        ({"kind": "malformed_json"}, errors.LLMResponseError),
        ({"kind": "cut_stream"}, errors.LLMResponseError),
        ({"kind": "unknown_model"}, errors.ModelNotFoundError),
        ({"kind": "unload"}, errors.ModelNotFoundError),
        ({"kind": "hang"}, errors.LLMTimeoutError),
    ],
)
async def test_each_fault_maps_to_its_exception(
    mock: MockLMStudio, fault: dict[str, object], error: type[errors.LLMError]
) -> None:
    client = LMStudioClient.create(mock.base_url, read_timeout_s=0.5, retry=NO_RETRY)
    await mock.faults(fault)
    with pytest.raises(error) as info:
        await client.chat({"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]})
    await client.aclose()
    if fault.get("retry_after"):
        assert info.value.retry_after == 7
    status = fault.get("status")
    assert info.value.retryable == (status in (429, 502, 503, 504))


async def test_connection_refused_is_a_connection_error() -> None:
    client = LMStudioClient.create(f"http://127.0.0.1:{free_port()}", retry=NO_RETRY)
    with pytest.raises(errors.LLMConnectionError) as info:
        await client.list_models()
    assert info.value.retryable
    await client.aclose()


async def test_unexpected_endpoint_quirk_is_an_error_not_a_result() -> None:
    async with mock_lmstudio("--api", "openai") as mock:
        client = LMStudioClient.create(mock.base_url, retry=NO_RETRY)
        with pytest.raises(errors.NotSupportedError, match="Unexpected endpoint"):
            await client.request_json("GET", "/api/v1/models")
        await client.aclose()
