"""Readers of call objects written as JSON without any marker: in a ```json fence, or bare in the text.
Without a marker to vouch for them, these take only strict call objects (call keys only, arguments present)."""

from __future__ import annotations

import contextlib
import re

from services.agent.text_calls.scan import Block, NotACall, calls_from_json, inside, read_json

_FENCE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)```", re.S)
_ACTION = re.compile(r"(?:(?<=\n)|(?<![\s\S]))Action:[ \t]*\n?[ \t]*\Z")
_JSON_FENCE_LANGUAGES = frozenset({"", "json", "json5", "tool_call", "tool_calls", "tool", "function_call"})
_CALL_OBJECT_START = re.compile(r"(?:\[\s*)?\{\s*[\"']?(?:name|type|function|tool_name)[\"']?\s*:")


def fenced_json(s: str) -> list[Block]:
    # a ```json fence holding only a call object (or a list of them)
    blocks: list[Block] = []
    if "{" not in s:
        return blocks
    for m in _FENCE.finditer(s):
        if m.group(1).lower() not in _JSON_FENCE_LANGUAGES:
            continue
        body = m.group(2)
        found = read_json(body, 0, len(body))
        if found is None or body[found[1] :].strip():
            continue
        try:
            block = Block(m.start(), m.end(), calls_from_json(found[0], True, found[2]))
        except NotACall:
            continue
        action = _ACTION.search(s, max(0, block.start - 20), block.start)  # Command R+: "Action:" before it
        if action is not None:
            block.start = action.start()
        blocks.append(block)
    return blocks


def _call_start(s: str, pos: int, brace: int) -> int:
    """Where a call opening at the `{` at s[brace] starts: at the `[` of a list around it, if any."""
    bracket = s.rfind("[", pos, brace)
    return bracket if bracket >= 0 and not s[bracket + 1 : brace].strip() else brace


def bare_json(s: str) -> list[Block]:
    # Llama 3.x/4 ({"name": ..., "parameters": ...}), Mistral without its [TOOL_CALLS] token,
    # and any model told to "answer with JSON": a call object, or a list of them, outside code fences
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(s)] if "```" in s else []
    fence_starts = [a for a, _ in fences]
    blocks: list[Block] = []
    pos = 0
    n = len(s)
    while (brace := s.find("{", pos)) >= 0:
        start = _call_start(s, pos, brace)
        if _CALL_OBJECT_START.match(s, start) is None or inside(fences, fence_starts, start):
            pos = brace + 1
            continue
        found = read_json(s, start, n)
        if found is None:
            pos = brace + 1
            continue
        value, end, repaired = found
        with contextlib.suppress(NotACall):
            blocks.append(Block(start, end, calls_from_json(value, True, repaired)))
        pos = max(end, brace + 1)
    return blocks
