"""Readers of the formats written in XML-like tags: JSON between tags (Hermes, Nemotron, Apriel) and the
markup formats, one tag per parameter (Qwen3-Coder, Seed-OSS, GLM, MiniMax)."""

from __future__ import annotations

import json
import re
from typing import Any

from services.agent.text_calls.scan import Block, Call, inside, json_blocks, occurrences, region, skip_ws

_FUNCTION_TAG = re.compile(r"<function=([^>\n]+)>")
_PARAMETER_TAG = re.compile(r"<parameter=([^>\n]+)>")
_GLM_HEAD = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*")
_GLM_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_INVOKE = re.compile(r"\s*<invoke name=\"([^\"]+)\">(.*?)</invoke>", re.S)
_MINIMAX_PARAMETER = re.compile(r"\s*<parameter name=\"([^\"]+)\">(.*?)</parameter>", re.S)


# --- JSON between tags ------------------------------------------------------------------------------


def hermes(s: str) -> list[Block]:
    # Qwen2.5/Qwen3, Hermes 2 Pro/3, SmolLM3, Granite 4: <tool_call>{"name": ..., "arguments": ...}</tool_call>
    return json_blocks(s, "<tool_call>", "</tool_call>")


def nemotron(s: str) -> list[Block]:
    # Nemotron Nano v2: <TOOLCALL>[{"name": ..., "arguments": ...}]</TOOLCALL>
    return json_blocks(s, "<TOOLCALL>", "</TOOLCALL>")


def tool_calls_tag(s: str) -> list[Block]:
    # Apriel 1.5/1.6: <tool_calls>[{...}]</tool_calls>; MiniMax-M1: <tool_calls>\n{...}\n{...}\n</tool_calls>
    return json_blocks(s, "<tool_calls>", "</tool_calls>")


# --- markup: one tag per parameter ------------------------------------------------------------------


def _markup_value(raw: str, trim_newlines: bool) -> Any:
    """A parameter's value: these templates write strings bare and objects/arrays as JSON; the format
    erases scalar types, so scalars stay strings (the agent coerces them to the tool's schema)."""
    if trim_newlines:
        if raw.startswith("\n"):
            raw = raw[1:]
        if raw.endswith("\n"):
            raw = raw[:-1]
    text = raw.strip()
    if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return raw
        if isinstance(parsed, (dict, list)):
            return parsed
    return raw


def _xml_function(s: str, start: int, limit: int) -> tuple[Call, int] | None:
    """`<function=NAME><parameter=K>V</parameter>...</function>` at s[start] -> (call, end)."""
    m = _FUNCTION_TAG.match(s, start, limit)
    if m is None:
        return None
    body_start = m.end()
    close = s.find("</function>", body_start, limit)
    body_end = close if close >= 0 else limit
    end = close + len("</function>") if close >= 0 else limit
    body = s[body_start:body_end]
    stripped = body.strip()
    if stripped and not stripped.startswith("<parameter="):
        return None
    arguments: dict[str, Any] = {}
    repaired = close < 0
    params = list(_PARAMETER_TAG.finditer(body))
    for n, p in enumerate(params):
        stop = params[n + 1].start() if n + 1 < len(params) else len(body)
        value_end = body.find("</parameter>", p.end(), stop)
        if value_end < 0:
            repaired = True
            value_end = stop
        arguments[p.group(1).strip()] = _markup_value(body[p.end() : value_end], trim_newlines=True)
    return Call(m.group(1).strip(), arguments, repaired), end


def _wrapped_xml_functions(s: str, opener: str, closer: str) -> list[Block]:
    """Blocks `opener <function=...>...</function> [...] closer`."""
    blocks: list[Block] = []
    for start in occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = region(s, begin, opener, closer)
        pos = skip_ws(s, begin, payload_end)
        calls: list[Call] = []
        while pos < payload_end and s.startswith("<function=", pos):
            found = _xml_function(s, pos, payload_end)
            if found is None:
                break
            call, pos = found
            calls.append(call)
            pos = skip_ws(s, pos, payload_end)
        if calls and (block_end >= 0 or pos >= payload_end):
            if block_end < 0:
                for call in calls:
                    call.repaired = True
            blocks.append(Block(start, block_end if block_end >= 0 else payload_end, calls))
    return blocks


def qwen3_coder(s: str) -> list[Block]:
    # Qwen3-Coder, Qwen3.5+, Nemotron 3 Nano:
    # <tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>
    blocks = _wrapped_xml_functions(s, "<tool_call>", "</tool_call>")
    taken = [(b.start, b.end) for b in blocks]
    starts = [a for a, _ in taken]
    for m in _FUNCTION_TAG.finditer(s):  # the same without the <tool_call> wrapper
        if inside(taken, starts, m.start()):
            continue
        after = skip_ws(s, m.end(), len(s))
        if not (s.startswith("<parameter=", after) or s.startswith("</function>", after)):
            continue
        nxt = s.find("<function=", m.end())
        found = _xml_function(s, m.start(), len(s) if nxt < 0 else nxt)
        if found is not None:
            blocks.append(Block(m.start(), found[1], [found[0]]))
    blocks.sort(key=lambda b: b.start)
    return blocks


def seed_oss(s: str) -> list[Block]:
    # ByteDance Seed-OSS: <seed:tool_call><function=NAME><parameter=K>V</parameter></function></seed:tool_call>
    return _wrapped_xml_functions(s, "<seed:tool_call>", "</seed:tool_call>")


def glm(s: str) -> list[Block]:
    # GLM-4.5/4.6/4.7: <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>
    blocks: list[Block] = []
    for start in occurrences(s, "<tool_call>"):
        begin = start + len("<tool_call>")
        payload_end, block_end = region(s, begin, "<tool_call>", "</tool_call>")
        if block_end < 0:
            continue
        head = _GLM_HEAD.match(s, begin, payload_end)
        if head is None:
            continue
        arguments: dict[str, Any] = {}
        pos = head.end()
        while (pair := _GLM_PAIR.match(s, pos, payload_end)) is not None:
            arguments[pair.group(1).strip()] = _markup_value(pair.group(2), trim_newlines=False)
            pos = pair.end()
        if s[pos:payload_end].strip():
            continue
        blocks.append(Block(start, block_end, [Call(head.group(1), arguments, False)]))
    return blocks


def _minimax_arguments(body: str) -> dict[str, Any] | None:
    """The `<parameter name="K">V</parameter>` pairs of one invoke, or None when other text is left."""
    arguments: dict[str, Any] = {}
    at = 0
    while (p := _MINIMAX_PARAMETER.match(body, at)) is not None:
        arguments[p.group(1)] = _markup_value(p.group(2), trim_newlines=False)
        at = p.end()
    return None if body[at:].strip() else arguments


def minimax(s: str) -> list[Block]:
    # MiniMax-M2: <minimax:tool_call><invoke name="NAME"><parameter name="K">V</parameter></invoke></minimax:tool_call>
    blocks: list[Block] = []
    for start in occurrences(s, "<minimax:tool_call>"):
        begin = start + len("<minimax:tool_call>")
        payload_end, block_end = region(s, begin, "<minimax:tool_call>", "</minimax:tool_call>")
        calls: list[Call] = []
        pos = begin
        while (inv := _INVOKE.match(s, pos, payload_end)) is not None:
            arguments = _minimax_arguments(inv.group(2))
            if arguments is None:
                break
            calls.append(Call(inv.group(1), arguments, False))
            pos = inv.end()
        if calls and not s[pos:payload_end].strip():
            blocks.append(Block(start, block_end if block_end >= 0 else payload_end, calls))
    return blocks
