"""Readers of Gemma's call notation, `call:NAME{key:<escape>text<escape>,n:5}`: Gemma 4 and FunctionGemma.
(Gemma 3's ```tool_code fences are Python syntax: python_formats.py.)"""

from __future__ import annotations

import json
import re
from typing import Any

from services.agent.text_calls.scan import Block, Call, occurrences, region, skip_ws

_GEMMA_CALL = re.compile(r"\s*call:([A-Za-z_][\w.\-]*)(?=\{)")
_BAREWORD = re.compile(r"[^\s,:{}\[\]<\"]+")
_JSON_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _gemma_token(s: str, j: int, limit: int, quote: str) -> tuple[str, int] | None:
    """The string or bare word at s[j] as JSON text -> (json, end)."""
    if s.startswith(quote, j):
        close = s.find(quote, j + len(quote), limit)
        return None if close < 0 else (json.dumps(s[j + len(quote) : close]), close + len(quote))
    if s[j] == '"':
        m = _JSON_STRING.match(s, j, limit)
        return None if m is None else (m.group(), m.end())
    word = _BAREWORD.match(s, j, limit)
    if word is None:
        return None
    text = word.group()
    k = skip_ws(s, word.end(), limit)
    is_key = k < limit and s[k] == ":"
    if not is_key and (text in ("true", "false", "null") or _NUMBER.fullmatch(text)):
        return text, word.end()
    return json.dumps(text), word.end()


def _gemma_object(s: str, i: int, limit: int, quote: str) -> tuple[dict[str, Any], int] | None:
    """The `{...}` at s[i] in Gemma's notation (strings between `quote`s, bare keys) -> (object, end)."""
    out: list[str] = []
    depth = 0
    j = i
    while j < limit:
        ch = s[j]
        if ch in "{[" or ch in "}]" or ch in ",:" or ch.isspace():
            depth += 1 if ch in "{[" else -1 if ch in "}]" else 0
            out.append(ch)
            j += 1
            if depth == 0:
                break
            continue
        token = _gemma_token(s, j, limit, quote)
        if token is None:
            return None
        out.append(token[0])
        j = token[1]
    if depth != 0:
        return None
    try:
        value = json.loads("".join(out))
    except (ValueError, RecursionError):
        return None
    return (value, j) if isinstance(value, dict) else None


def _gemma_blocks(s: str, opener: str, closer: str, quote: str) -> list[Block]:
    """Blocks `opener call:NAME{...} closer`."""
    blocks: list[Block] = []
    for start in occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = region(s, begin, opener, closer)
        head = _GEMMA_CALL.match(s, begin, payload_end)
        if head is None:
            continue
        found = _gemma_object(s, head.end(), payload_end, quote)
        if found is None:
            continue
        arguments, end = found
        if block_end >= 0:
            if s[end:payload_end].strip():
                continue
            end = block_end
        blocks.append(Block(start, end, [Call(head.group(1), arguments, False)]))
    return blocks


def function_gemma(s: str) -> list[Block]:
    # FunctionGemma: <start_function_call>call:NAME{key:<escape>text<escape>}<end_function_call>
    return _gemma_blocks(s, "<start_function_call>", "<end_function_call>", "<escape>")


def gemma4(s: str) -> list[Block]:
    # Gemma 4: <|tool_call>call:NAME{key:<|"|>text<|"|>}<tool_call|>
    return _gemma_blocks(s, "<|tool_call>", "<tool_call|>", '<|"|>')
