"""The arguments a model wrote for a tool call, checked before anything reaches an MCP server.

Whatever is wrong goes back to the model as the call's result, so it can correct itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.agent.repair import repair_arguments
from services.mcp import ToolSpec, coerce_arguments, validate_arguments
from services.text import may_hold_surrogates, scrub, unencodable_path


@dataclass(frozen=True, slots=True)
class Rejected:
    arguments: Any  # as recorded in the step (safe to render)
    message: str  # what the model is told


def maybe_json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass(frozen=True, slots=True)
class Written:
    """The arguments of one call as the model wrote them, parsed once for everything that reads them (never
    changed: the checked arguments are a new object wherever they differ)."""

    raw: str
    value: Any  # the JSON value; blank text: an empty object; not JSON: `raw`
    error: ValueError | None = None  # why `raw` is not JSON

    @classmethod
    def of(cls, raw: str) -> Written:
        if not raw.strip():
            return cls(raw, {})
        try:
            return cls(raw, json.loads(raw))
        except ValueError as exc:
            return cls(raw, raw, exc)

    def shown(self) -> Any:
        """What a `tool_call.started` event shows: `maybe_json(scrub(raw))` (blank text as it is)."""
        if not self.raw.strip():
            return self.raw
        clean = scrub(self.raw)
        return self.value if clean is self.raw else maybe_json(clean)


def check_arguments(spec: ToolSpec, written: Written, repair: bool = False) -> dict[str, Any] | Rejected:
    """The arguments to send (coerced to the schema's types; with `repair`, also a value wrapped as a one-item
    array and an enum's case fixed), or why they were rejected."""
    raw, parsed = written.raw, written.value
    if written.error is not None:
        return Rejected(scrub(raw), f"Error: the arguments are not valid JSON ({written.error}). Send a JSON object.")
    if not isinstance(parsed, dict):
        return Rejected(maybe_json(scrub(raw)), "Error: the arguments must be a JSON object.")
    # parsed JSON holds a lone surrogate only where its text does (as is or as an escape): walked only then
    bad = unencodable_path(parsed) if may_hold_surrogates(raw) else None
    if bad:  # never sent on: it would break the server's stream, and the session other runs share
        return Rejected(scrub(raw), f"Error: the argument {bad} holds text that is not valid Unicode. Send plain text.")
    args = coerce_arguments(spec.input_schema, parsed)
    if repair:
        args = coerce_arguments(spec.input_schema, repair_arguments(spec.input_schema, args))
    violations = validate_arguments(spec.input_schema, args)
    if violations:
        return Rejected(args, "Error: the arguments do not match the tool's input schema: " + "; ".join(violations))
    return args
