"""Placeholder until text tool-call recovery lands (being written now)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TextCall:
    name: str
    arguments: str
    repaired: bool = False


@dataclass(frozen=True)
class Recovery:
    calls: list[TextCall] = field(default_factory=list)
    text: str = ""
    format: str = ""


def recover_calls(content: str, offered: Collection[str]) -> Recovery | None:
    return None
