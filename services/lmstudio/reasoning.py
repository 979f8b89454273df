"""Placeholder until the reasoning splitter lands (being written now)."""

from __future__ import annotations


def split_reasoning(content: str | None) -> tuple[str | None, str | None]:
    return None, content
