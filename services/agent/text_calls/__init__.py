"""Tool calls a local model wrote as text, recovered (pure: no I/O).

Small local models often answer a tool request in plain `content` instead of structured
`tool_calls` (LM Studio then has nothing to parse). `recover_calls` finds calls written in the
formats local model families are trained on (their chat templates) and returns them with the text
around them. It never guesses: a call counts only when it is written in one of these formats and
names an offered tool; anything else stays text. docs/local-models.md lists the formats.

The package: this module (the public API and the ordered table of readers), scan.py (what the
readers share), and one module of readers per family of formats (xml_formats, bracket_formats,
special_tokens, gemma_formats, python_formats, json_formats).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from services.agent.text_calls import (
    bracket_formats,
    gemma_formats,
    json_formats,
    python_formats,
    special_tokens,
    xml_formats,
)
from services.agent.text_calls.scan import REPAIR_LIMIT, Block

__all__ = ["FORMATS", "REPAIR_LIMIT", "Recovery", "TextCall", "recover_calls"]


@dataclass(frozen=True, slots=True)
class TextCall:
    name: str
    arguments: str  # a JSON object
    repaired: bool = False  # the text was not valid JSON (or not well-formed markup) and was repaired


@dataclass(frozen=True, slots=True)
class Recovery:
    calls: list[TextCall]
    text: str  # the content without the calls, stripped ("" when the content was only calls)
    format: str  # hermes, mistral, llama_python_tag, bare_json, ... (docs/local-models.md)


Reader = Callable[[str], list[Block]]

# (format, markers: the reader runs only when one is in the content, reader); most specific first:
# the first format that yields a call to an offered tool wins
_FORMATS: tuple[tuple[str, tuple[str, ...], Reader], ...] = (
    ("hermes", ("<tool_call>",), xml_formats.hermes),
    ("seed_oss", ("<seed:tool_call>",), xml_formats.seed_oss),
    ("qwen3_coder", ("<function=",), xml_formats.qwen3_coder),
    ("glm", ("<tool_call>",), xml_formats.glm),
    ("minimax", ("<minimax:tool_call>",), xml_formats.minimax),
    ("mistral", ("[TOOL_CALLS]",), bracket_formats.mistral),
    ("lmstudio", ("[TOOL_REQUEST]",), bracket_formats.lmstudio),
    ("llama_python_tag", ("<|python_tag|>",), bracket_formats.llama_python_tag),
    ("llama_function", ("<function=",), bracket_formats.llama_function),
    ("functools", ("functools",), bracket_formats.functools),
    ("deepseek", (special_tokens.DEEPSEEK_MARKER,), special_tokens.deepseek),
    ("kimi_k2", ("<|tool_call_begin|>",), special_tokens.kimi_k2),
    ("granite", ("<|tool_call|>",), special_tokens.granite),
    ("gemma4", ("<|tool_call>",), gemma_formats.gemma4),
    ("function_gemma", ("<start_function_call>",), gemma_formats.function_gemma),
    ("lfm2", ("<|tool_call_start|>",), python_formats.lfm2),
    ("nemotron", ("<TOOLCALL>",), xml_formats.nemotron),
    ("tool_calls_tag", ("<tool_calls>",), xml_formats.tool_calls_tag),
    ("command_r", ("<|START_ACTION|>",), special_tokens.command_r),
    ("gemma_tool_code", ("```tool_code",), python_formats.gemma_tool_code),
    ("fenced_json", ("```",), json_formats.fenced_json),
    ("bare_json", ("{",), json_formats.bare_json),
    ("pythonic", ("[",), python_formats.pythonic),
)

FORMATS: tuple[str, ...] = tuple(name for name, _, _ in _FORMATS)

_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_EMPTY_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?\s*```")


def recover_calls(content: str, offered: Collection[str]) -> Recovery | None:
    """The calls written in `content` to tools in `offered`, or None when there is none."""
    if not content or not offered:
        return None
    # cheap check first: every format needs a `{` or a `<`, but Python-syntax calls: `[name(...)]`, ```tool_code
    if "{" not in content and "<" not in content and "`" not in content and ("[" not in content or "(" not in content):
        return None
    names = offered if isinstance(offered, (set, frozenset)) else frozenset(offered)
    refused: list[tuple[int, int]] = []  # calls to tools not offered: no later format reads their text again
    for fmt, markers, read in _FORMATS:
        if not any(marker in content for marker in markers):
            continue
        kept: list[Block] = []
        newly_refused: list[tuple[int, int]] = []
        starts = [a for a, _ in refused]
        for b in read(content):
            if not b.calls or _overlaps(refused, starts, b):
                continue
            if all(c.name in names for c in b.calls):
                kept.append(b)
            else:
                newly_refused.append((b.start, b.end))
        if kept:
            calls = [
                TextCall(c.name, json.dumps(c.arguments, ensure_ascii=False), c.repaired) for b in kept for c in b.calls
            ]
            return Recovery(calls, _without(content, kept), fmt)
        refused = sorted(refused + newly_refused)
    return None


def _overlaps(spans: list[tuple[int, int]], starts: list[int], b: Block) -> bool:
    """Whether the block overlaps one of the spans (sorted, not overlapping; `starts` are their starts)."""
    n = bisect.bisect_left(starts, b.end) - 1  # the last span starting before the block ends
    return n >= 0 and spans[n][1] > b.start


def _without(content: str, blocks: list[Block]) -> str:
    """The content with the blocks taken out (and the inline backticks that quoted one)."""
    parts: list[str] = []
    pos = 0
    for b in blocks:
        start, end = b.start, b.end
        if start > 0 and end < len(content) and content[start - 1] == "`" and content[end] == "`":
            start, end = start - 1, end + 1
        parts.append(content[pos:start])
        pos = end
    parts.append(content[pos:])
    for n in range(1, len(parts)):  # "Use <call> now" -> "Use now", not "Use  now"
        if parts[n].startswith(" ") and parts[n - 1].endswith(" "):
            parts[n] = parts[n][1:]
    text = "".join(parts)
    if "```" in text:
        text = _EMPTY_FENCE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()
