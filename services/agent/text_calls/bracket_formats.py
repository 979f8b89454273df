"""Readers of the formats that open with a bracketed or bare marker: Mistral's [TOOL_CALLS], LM Studio's
[TOOL_REQUEST], Llama's <|python_tag|> and <function=NAME>, FireFunction's functools[...]."""

from __future__ import annotations

import re

from services.agent.text_calls.python_formats import python_calls
from services.agent.text_calls.scan import (
    Block,
    Call,
    NotACall,
    calls_from_json,
    json_blocks,
    occurrences,
    preceded_by,
    read_json,
    region,
    skip_ws,
)

_MISTRAL_NAMED = re.compile(r"([A-Za-z_][\w.\-]*)(?:\[CALL_ID\][^\[]*)?(?:\[ARGS\])?")
_LLAMA_FUNCTION = re.compile(r"<function=([A-Za-z_][\w.\-]*)>")
_FUNCTOOLS = re.compile(r"functools\s*(?=\[)")


def _mistral_calls(s: str, pos: int, limit: int) -> tuple[list[Call], int] | None:
    """The calls after one [TOOL_CALLS] marker, from s[pos] (after whitespace) -> (calls, end)."""
    if pos < limit and s[pos] in "[{":  # v3: a JSON list of call objects
        found = read_json(s, pos, limit)
        if found is None:
            return None
        value, end, repaired = found
        return calls_from_json(value, False, repaired), end
    named = _MISTRAL_NAMED.match(s, pos, limit)  # v11+: NAME[ARGS]{...}
    if named is None:
        return None
    found = read_json(s, named.end(), limit)
    if found is None or not isinstance(found[0], dict):
        return None
    value, end, repaired = found
    return [Call(named.group(1), value, repaired)], end


def mistral(s: str) -> list[Block]:
    # Mistral v3: [TOOL_CALLS] [{"name": ..., "arguments": ...}]; v11+ (Devstral, Magistral, Ministral 3,
    # Mistral Small 3.2): [TOOL_CALLS]NAME[ARGS]{...} (also [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{...})
    blocks: list[Block] = []
    marker = "[TOOL_CALLS]"
    for start in occurrences(s, marker):
        payload_end, _ = region(s, start + len(marker), marker, None)
        pos = skip_ws(s, start + len(marker), payload_end)
        try:
            found = _mistral_calls(s, pos, payload_end)
        except NotACall:
            continue
        if found is not None:
            blocks.append(Block(start, found[1], found[0]))
    return blocks


def lmstudio(s: str) -> list[Block]:
    # LM Studio's own format for models without native tool use ("Default" tool use):
    # [TOOL_REQUEST]{"name": ..., "arguments": ...}[END_TOOL_REQUEST]
    return json_blocks(s, "[TOOL_REQUEST]", "[END_TOOL_REQUEST]")


def llama_python_tag(s: str) -> list[Block]:
    # Llama 3.1/3.2/3.3: <|python_tag|>{"name": ..., "parameters": ...} (calls separated by ";"),
    # and the built-in tools: <|python_tag|>brave_search.call(query="...")
    marker = "<|python_tag|>"
    blocks = json_blocks(s, marker, "<|eom_id|>")
    taken = {b.start for b in blocks}
    for start in occurrences(s, marker):
        if start in taken:
            continue
        begin = start + len(marker)
        line_end = s.find("\n", begin)
        stop = len(s) if line_end < 0 else line_end
        source = s[begin:stop].replace("<|eom_id|>", "").replace("<|eot_id|>", "")
        calls = python_calls(source.strip(), expression=True)
        if calls is None or len(calls) != 1 or not calls[0].name.endswith(".call"):
            continue
        calls[0].name = calls[0].name[: -len(".call")]
        blocks.append(Block(start, stop, calls))
    blocks.sort(key=lambda b: b.start)
    return blocks


def llama_function(s: str) -> list[Block]:
    # Llama 3.1 custom tool calling, Functionary v3.1: <function=NAME>{"arg": ...}</function>
    blocks: list[Block] = []
    for m in _LLAMA_FUNCTION.finditer(s):
        payload_end, block_end = region(s, m.end(), "<function=", "</function>")
        found = read_json(s, m.end(), payload_end)
        if found is None or not isinstance(found[0], dict):
            continue
        value, end, repaired = found
        if block_end >= 0:
            if s[end:payload_end].strip():
                continue
            end = block_end
        block = Block(m.start(), end, [Call(m.group(1), value, repaired)])
        before = preceded_by(s, block.start, "<tool_call>")  # some models wrap it in Hermes tags
        after = skip_ws(s, block.end, len(s))
        if before >= 0 and s.startswith("</tool_call>", after):
            block.start, block.end = before, after + len("</tool_call>")
        blocks.append(block)
    return blocks


def functools(s: str) -> list[Block]:
    # FireFunction v2: functools[{"name": ..., "arguments": ...}]
    blocks: list[Block] = []
    for m in _FUNCTOOLS.finditer(s):
        found = read_json(s, m.end(), len(s))
        if found is None:
            continue
        value, end, repaired = found
        try:
            blocks.append(Block(m.start(), end, calls_from_json(value, False, repaired)))
        except NotACall:
            continue
    return blocks
