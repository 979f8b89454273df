"""A model's tool arguments, parsed once and checked before anything reaches an MCP server."""

from __future__ import annotations

import json

import pytest

from services.agent.arguments import Rejected, Written, check_arguments
from services.mcp import ToolSpec
from services.text import may_hold_surrogates

SPEC = ToolSpec(
    name="echo",
    model_name="s__echo",
    description="",
    input_schema={"type": "object", "properties": {"n": {"type": "integer"}, "text": {"type": "string"}}},
    server="s",
)


@pytest.mark.parametrize(
    ("raw", "shown", "value"),
    [
        ("", "", {}),
        ("  ", "  ", {}),
        ('{"n": 1}', {"n": 1}, {"n": 1}),
        ("[1]", [1], [1]),
        ("{oops", "{oops", "{oops"),
    ],
)
def test_written_arguments_are_shown_and_read_as_before(raw: str, shown: object, value: object) -> None:
    written = Written.of(raw)
    assert (written.shown(), written.value) == (shown, value)
    assert (written.error is None) == (raw != "{oops")


def test_checked_arguments_are_coerced_and_bad_ones_rejected() -> None:
    assert check_arguments(SPEC, Written.of('{"n": "5"}')) == {"n": 5}
    assert check_arguments(SPEC, Written.of("")) == {}
    not_json = check_arguments(SPEC, Written.of("{oops"))
    assert isinstance(not_json, Rejected) and "not valid JSON" in not_json.message
    not_object = check_arguments(SPEC, Written.of("[1]"))
    assert isinstance(not_object, Rejected) and not_object.message == "Error: the arguments must be a JSON object."


@pytest.mark.parametrize("text", ["\udc00", "a\ud800b", "\udfff"])
def test_a_lone_surrogate_escaped_or_not_is_rejected(text: str) -> None:
    for raw in (json.dumps({"text": text}), json.dumps({"text": text}, ensure_ascii=False)):
        assert may_hold_surrogates(raw)
        checked = check_arguments(SPEC, Written.of(raw))
        assert isinstance(checked, Rejected) and "text holds text that is not valid Unicode" in checked.message


def test_text_without_surrogates_is_not_walked() -> None:
    assert not may_hold_surrogates(json.dumps({"text": "é \ue000 \u7d00"}, ensure_ascii=False))
    assert not may_hold_surrogates('{"text": "\\u00e9"}')
    # an escaped backslash before "udc00" looks like an escape: walked, and found clean
    raw = json.dumps({"text": "\\udc00"})
    assert may_hold_surrogates(raw) and check_arguments(SPEC, Written.of(raw)) == {"text": "\\udc00"}
