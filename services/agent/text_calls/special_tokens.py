"""Readers of the formats written between special tokens: DeepSeek, Kimi K2, Granite 3, Command R."""

from __future__ import annotations

import re

from services.agent.text_calls.scan import (
    Block,
    Call,
    NotACall,
    arguments_object,
    json_blocks,
    preceded_by,
    read_json,
    skip_ws,
)

# DeepSeek's markers: fullwidth bars (U+FF5C) and "▁" (U+2581) for spaces, which models also write as "_" or " "
_B = "\uff5c"
_SP = "[\u2581_ ]"
_SP_RE = re.compile(_SP)
_DS_MARKER = re.compile(f"<{_B}tool{_SP}(calls{_SP}begin|calls{_SP}end|call{_SP}begin|call{_SP}end|sep){_B}>")
_FENCED_BODY = re.compile(r"\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*\Z", re.S)
_KIMI_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>(.*?)"
    r"(?:<\|tool_call_end\|>|(?=<\|tool_call_begin\|>)|(?=<\|tool_calls_section_end\|>)|\Z)",
    re.S,
)

DEEPSEEK_MARKER = f"<{_B}tool"  # what every DeepSeek marker starts with


# --- DeepSeek -------------------------------------------------------------------------------------


def _deepseek_call(head: str, body: str) -> Call:
    head = head.strip()
    if head == "function":  # R1: "function", the separator, NAME, then the arguments in a ```json fence
        name, _, body = body.partition("\n")
        head = name.strip()
        fenced = _FENCED_BODY.match(body)
        if fenced is not None:
            body = fenced.group(1)
    found = read_json(body, 0, len(body))
    if not head or found is None or body[found[1] :].strip():
        raise NotACall
    value, _, repaired = found
    if isinstance(value, str):
        value, repaired = arguments_object(value)
    if not isinstance(value, dict):
        raise NotACall
    return Call(head, value, repaired)


class _DeepSeekReader:
    """Reads the markers in order (one pass): a section of calls, or a call on its own, is one block."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.blocks: list[Block] = []
        self.block: Block | None = None
        self.in_section = False
        self.bad = False  # a call in the block is not one: the block stays text
        self.head = -1  # where the current call's name starts; -1 outside a call
        self.sep: re.Match[str] | None = None

    def read(self) -> list[Block]:
        for m in _DS_MARKER.finditer(self.s):
            kind, _, edge = _SP_RE.sub(" ", m.group(1)).partition(" ")  # "calls begin" -> ("calls", "begin")
            ends = edge == "end"
            if self.head >= 0 and kind != "sep":
                self._end_call(m.start(), m.end() if kind == "call" and ends else m.start())
                if kind == "call" and ends:
                    continue
            if kind == "calls" and ends:
                self._end_section(m)
            elif kind == "calls":
                self._close_block()
                self.block, self.in_section = Block(m.start(), m.end(), []), True
            elif kind == "call" and not ends:
                if self.block is None:
                    self.block, self.in_section = Block(m.start(), m.end(), []), False
                self.head, self.sep = m.end(), None
            elif kind == "sep" and self.head >= 0 and self.sep is None:
                self.sep = m
        if self.head >= 0:
            self._end_call(len(self.s), len(self.s))
        self._close_block()
        return self.blocks

    def _end_section(self, m: re.Match[str]) -> None:
        if self.block is not None:
            self.block.end = m.end()
        elif self.blocks and not self.s[self.blocks[-1].end : m.start()].strip():
            self.blocks[-1].end = m.end()
        self._close_block()

    def _end_call(self, body_end: int, block_end: int) -> None:
        assert self.block is not None
        try:
            if self.sep is None:
                raise NotACall
            self.block.calls.append(
                _deepseek_call(self.s[self.head : self.sep.start()], self.s[self.sep.end() : body_end])
            )
        except NotACall:
            self.bad = True
        self.block.end = block_end
        self.head, self.sep = -1, None
        if not self.in_section:
            self._close_block()

    def _close_block(self) -> None:
        if self.block is not None:
            if self.bad:
                self.block.calls = []
            self.blocks.append(self.block)
        self.block, self.in_section, self.bad = None, False, False


def deepseek(s: str) -> list[Block]:
    # DeepSeek V3/V3.1, R1 and its distills: <(tool calls begin)><(tool call begin)>NAME<(tool sep)>{...}
    # <(tool call end)><(tool calls end)>, each marker between fullwidth bars (docs/local-models.md)
    return _DeepSeekReader(s).read()


# --- the others -----------------------------------------------------------------------------------


def kimi_k2(s: str) -> list[Block]:
    # Kimi K2: <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}
    # <|tool_call_end|><|tool_calls_section_end|>
    blocks: list[Block] = []
    for m in _KIMI_CALL.finditer(s):
        body = m.group(2)
        found = read_json(body, 0, len(body))
        if found is None or not isinstance(found[0], dict) or body[found[1] :].strip():
            continue
        blocks.append(Block(m.start(), m.end(), [Call(m.group(1), found[0], found[2])]))
    # the section markers around kept calls go with them
    for b in blocks:
        before = preceded_by(s, b.start, "<|tool_calls_section_begin|>")
        if before >= 0:
            b.start = before
        after = skip_ws(s, b.end, len(s))
        if s.startswith("<|tool_calls_section_end|>", after):
            b.end = after + len("<|tool_calls_section_end|>")
    return blocks


def granite(s: str) -> list[Block]:
    # Granite 3.x: <|tool_call|>[{"name": ..., "arguments": ...}]
    return json_blocks(s, "<|tool_call|>", None)


def command_r(s: str) -> list[Block]:
    # Command R7B: <|START_ACTION|>[{"tool_call_id": "0", "tool_name": ..., "parameters": {...}}]<|END_ACTION|>
    return json_blocks(s, "<|START_ACTION|>", "<|END_ACTION|>")
