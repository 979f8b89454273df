"""The arguments a model wrote for a tool call, checked before anything reaches an MCP server.

Whatever is wrong goes back to the model as the call's result, so it can correct itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.agent.repair import repair_arguments
from services.mcp import ToolSpec, coerce_arguments, validate_arguments
from services.text import scrub, unencodable_path


@dataclass(frozen=True, slots=True)
class Rejected:
    arguments: Any  # as recorded in the step (safe to render)
    message: str  # what the model is told


def maybe_json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def check_arguments(spec: ToolSpec, raw: str, repair: bool = False) -> dict[str, Any] | Rejected:
    """The arguments to send (coerced to the schema's types; with `repair`, also a value wrapped as a one-item
    array and an enum's case fixed), or why they were rejected."""
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return Rejected(scrub(raw), f"Error: the arguments are not valid JSON ({exc}). Send a JSON object.")
    if not isinstance(parsed, dict):
        return Rejected(maybe_json(scrub(raw)), "Error: the arguments must be a JSON object.")
    bad = unencodable_path(parsed)
    if bad:  # never sent on: it would break the server's stream, and the session other runs share
        return Rejected(scrub(raw), f"Error: the argument {bad} holds text that is not valid Unicode. Send plain text.")
    args = coerce_arguments(spec.input_schema, parsed)
    if repair:
        args = coerce_arguments(spec.input_schema, repair_arguments(spec.input_schema, args))
    violations = validate_arguments(spec.input_schema, args)
    if violations:
        return Rejected(args, "Error: the arguments do not match the tool's input schema: " + "; ".join(violations))
    return args
