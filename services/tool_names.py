"""Model-facing tool names: `<server>__<tool>` sanitised to `^[a-zA-Z0-9_-]{1,64}$`, collision-safe."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

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


def model_tool_name(server: str, tool: str) -> str:
    """`<server>__<tool>` with invalid characters replaced by `_`, shortened with a hash when too long."""
    raw = f"{server}{SEPARATOR}{tool}"
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
        suffix = "_" + _short_hash(f"{pair[0]}{SEPARATOR}{pair[1]}")
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
