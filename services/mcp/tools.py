"""Tools as the gateway sees them: one tool's spec, a call's result, the tool set offered to a model,
and model-facing names (`<server>__<tool>` sanitised to `^[a-zA-Z0-9_-]{1,64}$`, collision-safe).

The dataclasses are also the HTTP response models: their fields carry the OpenAPI descriptions, and
internal-only fields are excluded from the wire. Constructing them validates nothing (hot path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

if TYPE_CHECKING:  # the SDK is imported when a server session starts, not at the gateway's start-up
    import mcp_types as mtypes

MAX_TOOL_NAME_LEN = 64
SEPARATOR = "__"
_HASH_LEN = 8
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
VALID_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LEN]


def _fit(name: str, key: str) -> str:
    """Truncate to the limit, keeping a stable hash of `key` as the suffix."""
    if len(name) <= MAX_TOOL_NAME_LEN:
        return name
    suffix = "_" + _short_hash(key)
    return name[: MAX_TOOL_NAME_LEN - len(suffix)] + suffix


def qualified_name(server: str, tool: str) -> str:
    """`<server>__<tool>` as written: what approval and key globs match (`model_tool_name` is what models see)."""
    return f"{server}{SEPARATOR}{tool}"


def split_qualified(name: str) -> tuple[str, str] | None:
    """(server, tool) of a `<server>__<tool>` name; None when it has no separator."""
    server, separator, tool = name.partition(SEPARATOR)
    return (server, tool) if separator else None


def model_tool_name(server: str, tool: str) -> str:
    """`<server>__<tool>` with invalid characters replaced by `_`, shortened with a hash when too long."""
    raw = qualified_name(server, tool)
    return _fit(_INVALID.sub("_", raw) or "_", raw)


class ToolNameMap:
    """Unique model names for (server, tool) pairs, and the way back."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._by_name: dict[str, tuple[str, str]] = {}
        self._by_pair: dict[tuple[str, str], str] = {}
        for pair in pairs:
            if pair in self._by_pair:
                continue
            name = model_tool_name(*pair)
            if name in self._by_name:
                name = self._dedupe(name, pair)
            self._by_name[name] = pair
            self._by_pair[pair] = name

    def _dedupe(self, base: str, pair: tuple[str, str]) -> str:
        for n in range(2, 100):
            suffix = f"_{n}"
            candidate = base[: MAX_TOOL_NAME_LEN - len(suffix)] + suffix
            if candidate not in self._by_name:
                return candidate
        suffix = "_" + _short_hash(qualified_name(*pair))
        return base[: MAX_TOOL_NAME_LEN - len(suffix)] + suffix

    def name_for(self, server: str, tool: str) -> str:
        """The model name given to (server, tool); KeyError when it was not in the map."""
        return self._by_pair[(server, tool)]

    def resolve(self, model_name: str) -> tuple[str, str] | None:
        """(server, tool) for a model-facing name, or None."""
        return self._by_name.get(model_name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


@dataclass(frozen=True)
class ToolSpec:
    """One tool of one MCP server, with the name the model sees."""

    name: Annotated[str, Field(description="The tool's name on its server")]
    model_name: Annotated[str, Field(description="The name offered to the model: <server>__<tool>")]
    description: Annotated[str, Field(description="What the tool does, as its server describes it")]
    input_schema: Annotated[dict[str, Any], Field(description="JSON Schema of the tool's arguments")]
    server: Annotated[str, Field(exclude=True)]
    annotations: Annotated[
        dict[str, Any] | None,
        Field(
            description="The server's hints about the tool (readOnlyHint, destructiveHint, idempotentHint, "
            "openWorldHint, title) as it sent them: hints, never guarantees"
        ),
    ] = None
    destructive: Annotated[
        bool,
        Field(
            description="What the approval rule `destructive` matches: not readOnlyHint and destructiveHint not "
            "false (MCP's defaults: a tool without hints counts as destructive)"
        ),
    ] = True


def spec_of(server: str, tool: mtypes.Tool) -> ToolSpec:
    """The spec of a tool the server listed (its input schema shared, not copied: compiled validators are cached
    by identity)."""
    hints = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
    return ToolSpec(
        name=tool.name,
        model_name=model_tool_name(server, tool.name),
        description=tool.description or tool.title or "",
        input_schema=tool.input_schema,
        server=server,
        annotations=hints,
        destructive=is_destructive(hints),
    )


@dataclass(frozen=True)
class VisibleTools:
    """The tools of one server's tool list that its mcp.json entry lets through, in order and by name (a call looks
    its tool up, never scans the list; the first of a name wins)."""

    listed: list[mtypes.Tool]  # the SDK's tool list they came from
    specs: list[ToolSpec]
    by_name: dict[str, ToolSpec]

    @classmethod
    def of(cls, server: str, listed: list[mtypes.Tool], allowed: Callable[[str], bool]) -> VisibleTools:
        specs = [spec_of(server, tool) for tool in listed if allowed(tool.name)]
        return cls(listed, specs, {spec.name: spec for spec in reversed(specs)})


def is_destructive(annotations: dict[str, Any] | None) -> bool:
    """MCP's reading of a tool's hints: destructive unless it says it is read-only or not destructive."""
    if not annotations:
        return True
    return not annotations.get("readOnlyHint", False) and annotations.get("destructiveHint", True) is not False


@dataclass(frozen=True)
class ToolResult:
    """The outcome of a tool call; `is_error` is the tool's own error flag."""

    content: Annotated[list[dict[str, Any]], Field(description="MCP content blocks (text, image, resource, ...)")]
    text: Annotated[str, Field(exclude=True)]  # the content summarised as text, for the model
    structured_content: Annotated[
        dict[str, Any] | None, Field(description="The tool's structured output, when it gives one")
    ]
    is_error: Annotated[bool, Field(description="True when the tool reported an error")]
    timeout_s: Annotated[
        float | None,
        Field(
            description="The call's timeout in seconds: the tool's (bridge.tool_timeouts), the server's or the default"
        ),
    ] = None
    progress_resets: Annotated[
        int, Field(description="Progress notifications from the server that reset the timeout (up to the hard maximum)")
    ] = 0


@dataclass
class ToolSet:
    """Tools of several servers with collision-safe model names."""

    tools: list[ToolSpec]
    _by_name: dict[str, ToolSpec] = field(init=False, repr=False)
    _openai: list[dict[str, Any]] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._by_name = {t.model_name: t for t in self.tools}

    @classmethod
    def named(cls, specs: Iterable[ToolSpec]) -> ToolSet:
        """The specs renamed so that no two share a model name (first come keeps `<server>__<tool>`)."""
        specs = list(specs)
        names = ToolNameMap((s.server, s.name) for s in specs)
        return cls([dataclasses.replace(s, model_name=names.name_for(s.server, s.name)) for s in specs])

    def resolve(self, model_name: str) -> ToolSpec | None:
        """The tool a model-facing name refers to, or None."""
        return self._by_name.get(model_name)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function tools: built once per tool set (the pool hands out the same set while the
        servers' tool lists last); a new list each call, its entries shared and never to be changed."""
        if self._openai is None:
            self._openai = [
                {
                    "type": "function",
                    "function": {"name": t.model_name, "description": t.description, "parameters": t.input_schema},
                }
                for t in self.tools
            ]
        return list(self._openai)


def _summarise_block(block: Any) -> str:
    import mcp_types as mtypes  # loaded with the session that produced the result

    if isinstance(block, mtypes.TextContent):
        return block.text
    if isinstance(block, mtypes.ImageContent | mtypes.AudioContent):
        return f"[{block.type} {block.mime_type}]"
    if isinstance(block, mtypes.ResourceLink):
        return f"[resource {block.uri}]"
    if isinstance(block, mtypes.EmbeddedResource):
        res = block.resource
        if isinstance(res, mtypes.TextResourceContents):
            return res.text
        return f"[resource {res.uri} {res.mime_type or 'binary'}]"
    return f"[{getattr(block, 'type', 'content')}]"


def to_tool_result(
    result: mtypes.CallToolResult, timeout_s: float | None = None, progress_resets: int = 0
) -> ToolResult:
    """Convert the SDK's result into a plain ToolResult (with the timeout that applied to the call)."""
    content = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]
    text = "\n".join(_summarise_block(b) for b in result.content)
    structured = result.structured_content if isinstance(result.structured_content, dict) else None
    return ToolResult(content, text, structured, bool(result.is_error), timeout_s, progress_resets)


def error_result(text: str) -> ToolResult:
    """A tool-error result carrying one text block."""
    return ToolResult(content=[{"type": "text", "text": text}], text=text, structured_content=None, is_error=True)
