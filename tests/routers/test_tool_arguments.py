"""The REST tool call reads its body itself (routers/mcp.py `tool_arguments`), as FastAPI read the `dict` body
the route took before: the same arguments, and the same answers to bodies that are not a JSON object."""

from __future__ import annotations

from typing import Any

import pytest

from routers.mcp import tool_arguments
from services.errors import BridgeError, InvalidJSONError, InvalidRequestError

JSON = "application/json"
NOT_A_DICT = [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]


@pytest.mark.parametrize(
    ("raw", "content_type", "arguments"),
    [
        (b'{"text": "hi"}', JSON, {"text": "hi"}),
        (b'{"text": "hi"}', "application/json; charset=utf-8", {"text": "hi"}),
        (b'{"text": "hi"}', "Application/JSON", {"text": "hi"}),
        (b'{"text": "hi"}', "application/vnd.example+json", {"text": "hi"}),
        (b"", JSON, {}),
        (b"", None, {}),
        (b"{}", JSON, {}),
    ],
)
def test_a_json_object_is_the_arguments_and_no_body_is_none(
    raw: bytes, content_type: str | None, arguments: dict[str, Any]
) -> None:
    assert tool_arguments(raw, content_type) == arguments


@pytest.mark.parametrize(
    ("raw", "content_type", "error", "detail"),
    [
        (b'{"text": "hi"}', None, InvalidRequestError, "body: Input should be a valid dictionary"),
        (b'{"text": "hi"}', "text/plain", InvalidRequestError, "body: Input should be a valid dictionary"),
        (b'{"text": "hi"}', "application/xml", InvalidRequestError, "body: Input should be a valid dictionary"),
        (b"[1, 2]", JSON, InvalidRequestError, "body: Input should be a valid dictionary"),
        (b"null", JSON, InvalidRequestError, "body: Input should be a valid dictionary"),
        (b'{"text": ', JSON, InvalidJSONError, "The body is not valid JSON"),
        (b'{"text": "\xff"}', JSON, InvalidJSONError, "could not be parsed as JSON"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, InvalidJSONError, "could not be parsed as JSON"),
    ],
)
def test_anything_else_is_a_422_or_invalid_json_as_fastapi_answered(
    raw: bytes, content_type: str | None, error: type[BridgeError], detail: str
) -> None:
    with pytest.raises(error) as caught:
        tool_arguments(raw, content_type)
    assert detail in caught.value.detail
    if error is InvalidRequestError:
        assert caught.value.extras["errors"] == NOT_A_DICT
