"""Argument repair (string -> number/bool) and JSON-schema validation of model-sent arguments."""

from __future__ import annotations

from typing import Any

from services.mcp import coerce_arguments, validate_arguments

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "maybe": {"type": ["integer", "null"]},
        "name": {"type": "string"},
        "inner": {"type": "object", "properties": {"n": {"type": "integer"}, "on": {"type": "boolean"}}},
        "nums": {"type": "array", "items": {"type": "number"}},
    },
    "required": ["count"],
}


def test_coerce_arguments() -> None:
    args = {
        "count": "5",
        "ratio": "2.5",
        "flag": "TRUE",
        "maybe": "7",
        "name": "42",
        "inner": {"n": "3", "on": "false"},
        "nums": ["1", "1.5"],
        "extra": "9",
    }
    assert coerce_arguments(SCHEMA, args) == {
        "count": 5,
        "ratio": 2.5,
        "flag": True,
        "maybe": 7,
        "name": "42",
        "inner": {"n": 3, "on": False},
        "nums": [1, 1.5],
        "extra": "9",
    }
    # values that do not convert cleanly stay as they are
    assert coerce_arguments(SCHEMA, {"count": "five", "ratio": "1.2.3", "flag": "yes"}) == {
        "count": "five",
        "ratio": "1.2.3",
        "flag": "yes",
    }
    assert coerce_arguments(SCHEMA, {"count": "2.5"}) == {"count": "2.5"}
    assert coerce_arguments({}, {"a": "1"}) == {"a": "1"}


def test_validate_arguments() -> None:
    assert validate_arguments(SCHEMA, {"count": 1}) == []
    errors = validate_arguments(SCHEMA, {"count": "x", "inner": {"n": "y"}})
    assert "$.count: 'x' is not of type 'integer'" in errors
    assert "$.inner.n: 'y' is not of type 'integer'" in errors
    assert validate_arguments(SCHEMA, {}) == ["$: 'count' is a required property"]
    assert validate_arguments(SCHEMA, {"count": 1, "nums": [1, "a"]}) == ["$.nums[1]: 'a' is not of type 'number'"]


def test_validate_arguments_broken_schema_never_raises() -> None:
    assert validate_arguments({"type": "no-such-type"}, {"a": 1}) == []
    assert validate_arguments({"type": "object", "required": 5}, {}) == []
    assert validate_arguments({"$ref": "#/nowhere"}, {}) == []
    assert validate_arguments({"type": "object", "properties": {"a": {"pattern": "("}}}, {"a": "x"}) == []


def test_validate_arguments_draft_from_schema() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": ["a"]}
    assert validate_arguments(draft7, {}) == ["$: 'a' is a required property"]
