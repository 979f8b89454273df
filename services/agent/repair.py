"""Argument repair against a tool's input schema (the `repair` aid), beyond the string -> number/boolean
conversion every call gets: a single value where the schema wants an array becomes a one-item array, and a
string matching one of an enum's values but for its case becomes that value. Only unambiguous repairs."""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 8


def _wants_array(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "array" or (isinstance(kind, list) and kind == ["array"])


def _repair_value(schema: Any, value: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return value
    if _wants_array(schema) and not isinstance(value, list) and value is not None:
        return [_repair_value(schema.get("items"), value, depth + 1)]
    enum = schema.get("enum")
    if isinstance(enum, list) and isinstance(value, str) and value not in enum:
        matches = [e for e in enum if isinstance(e, str) and e.lower() == value.lower()]
        if len(matches) == 1:
            return matches[0]
    if isinstance(value, dict):
        return repair_arguments(schema, value, depth + 1)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_repair_value(schema["items"], v, depth + 1) for v in value]
    return value


def repair_arguments(schema: dict[str, Any], args: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """A new dict with the unambiguous repairs made; values that need none are kept as they are."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return args
    return {key: _repair_value(props[key], value, depth) if key in props else value for key, value in args.items()}
