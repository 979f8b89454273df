"""Tool argument repair (string -> number/bool) and JSON-schema validation for model-sent arguments."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

from jsonschema import exceptions as js_exceptions
from jsonschema import validators
from jsonschema.protocols import Validator

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MAX_DEPTH = 8


def _types_of(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    t = schema.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    return []


_UNCHANGED: Any = object()  # a converter's answer when the text does not convert


def _as_integer(text: str) -> Any:
    return int(text) if _INT.match(text) else _UNCHANGED


def _as_number(text: str) -> Any:
    if _INT.match(text):
        return int(text)
    return float(text) if _FLOAT.match(text) else _UNCHANGED


def _as_boolean(text: str) -> Any:
    lowered = text.lower()
    return lowered == "true" if lowered in ("true", "false") else _UNCHANGED


def _as_null(text: str) -> Any:
    return None if text.lower() in ("null", "none") else _UNCHANGED


# schema type -> converter of the stripped text, tried in this order
_STRING_CONVERTERS: tuple[tuple[str, Callable[[str], Any]], ...] = (
    ("integer", _as_integer),
    ("number", _as_number),
    ("boolean", _as_boolean),
    ("null", _as_null),
)


def _coerce_string(types: list[str], value: str) -> Any:
    """`value` converted to the first of `types` it cleanly matches, else `value` unchanged."""
    text = value.strip()
    for type_name, convert in _STRING_CONVERTERS:
        if type_name in types:
            converted = convert(text)
            if converted is not _UNCHANGED:
                return converted
    return value


def _coerce_value(schema: Any, value: Any, depth: int) -> Any:
    if isinstance(value, str):
        types = _types_of(schema)
        return value if "string" in types else _coerce_string(types, value)
    if depth >= _MAX_DEPTH or not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        return _coerce_object(schema, cast("dict[str, Any]", value), depth + 1)
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_coerce_value(items, v, depth + 1) for v in value]
    return value


def _coerce_object(schema: dict[str, Any], args: dict[str, Any], depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return args
    return {key: _coerce_value(props[key], value, depth) if key in props else value for key, value in args.items()}


def coerce_arguments(schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Convert strings like "5", "2.5", "true" where the property's schema wants a number/integer/boolean.

    Returns a new dict; values that do not convert cleanly are left as they are.
    """
    if not isinstance(schema, dict) or not isinstance(args, dict):
        return args
    return _coerce_object(schema, args, 0)


def _path(error: js_exceptions.ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_VALIDATORS: dict[int, tuple[dict[str, Any], Validator | None]] = {}
VALIDATOR_CACHE_SIZE = 1024


def _validator(schema: dict[str, Any]) -> Validator | None:
    """The compiled validator of a schema (None if the schema is invalid), cached by identity:
    tool schemas live as long as the tool list they came from."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    try:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        cls.check_schema(schema)
        validator: Validator | None = cls(schema)
    except Exception:  # a broken schema disables validation
        validator = None
    if len(_VALIDATORS) >= VALIDATOR_CACHE_SIZE:
        _VALIDATORS.pop(next(iter(_VALIDATORS)))
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def validate_arguments(schema: dict[str, Any], args: Any) -> list[str]:
    """Schema violations as readable strings; [] when valid or when the schema itself is invalid."""
    if not isinstance(schema, dict) or not schema:
        return []
    validator = _validator(schema)
    if validator is None:
        return []
    try:
        errors = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    except Exception:  # e.g. a $ref that does not resolve, a bad regex: no validation
        return []
    return [f"{_path(e)}: {e.message}" for e in errors]
