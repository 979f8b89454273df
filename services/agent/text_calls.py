"""Tool calls a local model wrote as text, recovered (pure: no I/O).

Small local models often answer a tool request in plain `content` instead of structured
`tool_calls` (LM Studio then has nothing to parse). `recover_calls` finds calls written in the
formats local model families are trained on (their chat templates) and returns them with the text
around them. It never guesses: a call counts only when it is written in one of these formats and
names an offered tool; anything else stays text. docs/local-models.md lists the formats.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import json_repair


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


@dataclass(slots=True)
class _Call:
    name: str
    arguments: dict[str, Any]
    repaired: bool


@dataclass(slots=True)
class _Block:
    start: int
    end: int
    calls: list[_Call]


class _NotACall(Exception):
    """The text looked like a call at first, but is not one in its format."""


def recover_calls(content: str, offered: Collection[str]) -> Recovery | None:
    """The calls written in `content` to tools in `offered`, or None when there is none."""
    if not content or not offered:
        return None
    # cheap check first: every format needs a `{` or a `<`, but Python-syntax calls: `[name(...)]`, ```tool_code
    if "{" not in content and "<" not in content and "`" not in content and ("[" not in content or "(" not in content):
        return None
    names = offered if isinstance(offered, (set, frozenset)) else frozenset(offered)
    refused: list[tuple[int, int]] = []  # calls to tools not offered: no later format reads their text again
    for fmt, markers, parse in _FORMATS:
        if not any(marker in content for marker in markers):
            continue
        kept: list[_Block] = []
        newly_refused: list[tuple[int, int]] = []
        starts = [a for a, _ in refused]
        for b in parse(content):
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


def _overlaps(spans: list[tuple[int, int]], starts: list[int], b: _Block) -> bool:
    """Whether the block overlaps one of the spans (sorted, not overlapping; `starts` are their starts)."""
    n = bisect.bisect_left(starts, b.end) - 1  # the last span starting before the block ends
    return n >= 0 and spans[n][1] > b.start


# --- shared pieces ------------------------------------------------------------------------------

REPAIR_LIMIT = 100_000  # characters: longer broken JSON stays text (json-repair takes seconds on megabytes)
_DECODER = json.JSONDecoder()
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_EMPTY_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?\s*```")
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "tool_call_id", "tool_name"})


def _without(content: str, blocks: list[_Block]) -> str:
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


def _skip_ws(s: str, i: int, limit: int) -> int:
    while i < limit and s[i].isspace():
        i += 1
    return i


def _preceded_by(s: str, i: int, tag: str) -> int:
    """Where `tag` starts when only whitespace separates it from s[i]; -1 when it does not."""
    while i > 0 and s[i - 1].isspace():
        i -= 1
    return i - len(tag) if s.startswith(tag, i - len(tag)) else -1


def _inside(spans: list[tuple[int, int]], starts: list[int], i: int) -> bool:
    """Whether s[i] falls in one of the spans (sorted, not overlapping; `starts` are their starts)."""
    n = bisect.bisect_right(starts, i) - 1
    return n >= 0 and i < spans[n][1]


def _balanced_end(s: str, i: int, limit: int) -> int | None:
    """The end of the JSON value opening at s[i] (`{` or `[`), or None when it never closes."""
    depth = 0
    in_string = escaped = False
    for j in range(i, limit):
        ch = s[j]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def _read_json(s: str, i: int, limit: int) -> tuple[Any, int, bool] | None:
    """The JSON object or array at s[i] (after whitespace): (value, end, repaired), or None."""
    i = _skip_ws(s, i, limit)
    if i >= limit or s[i] not in "{[":
        return None
    try:
        value, end = _DECODER.raw_decode(s, i)
        if end <= limit:
            return value, end, False
    except (ValueError, RecursionError):
        pass
    closed = _balanced_end(s, i, limit)
    if closed is not None:
        end = closed
    else:  # never closes: repair up to its last closing bracket (what follows is text)
        cut = max(s.rfind("}", i + 1, limit), s.rfind("]", i + 1, limit))
        end = cut + 1 if cut > 0 else limit
    if end - i > REPAIR_LIMIT:
        return None
    try:
        value = json_repair.loads(s[i:end])
    except Exception:  # json-repair gives up on some inputs by raising
        return None
    if not isinstance(value, (dict, list)) or not value:
        return None
    return value, end, True


def _arguments(value: Any) -> tuple[dict[str, Any], bool]:
    """Arguments as written (object, JSON string, absent) -> (object, repaired)."""
    if value is None:
        return {}, False
    if isinstance(value, dict):
        return value, False
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}, False
        try:
            parsed = json.loads(text)
            repaired = False
        except (ValueError, RecursionError):
            if len(text) > REPAIR_LIMIT:
                raise _NotACall from None
            try:
                parsed = json_repair.loads(text)
            except Exception:
                raise _NotACall from None
            repaired = True
        if isinstance(parsed, dict):
            return parsed, repaired
    raise _NotACall


def _call_from_object(obj: Any, strict: bool) -> _Call:
    """A call object: {"name", "arguments"|"parameters"}, OpenAI's {"type": "function", "function": {...}},
    Command R's {"tool_name", "parameters"}. strict (no marker around it): only those keys, arguments present."""
    if not isinstance(obj, dict):
        raise _NotACall
    if isinstance(obj.get("function"), dict):
        if strict and (set(obj) - {"function", "type", "id", "index"} or obj.get("type", "function") != "function"):
            raise _NotACall
        obj = obj["function"]
    name = obj.get("name", obj.get("tool_name"))
    if not isinstance(name, str) or not name.strip():
        raise _NotACall
    key = next((k for k in ("arguments", "parameters") if k in obj), None)
    if strict and (key is None or set(obj) - _CALL_KEYS or obj.get("type", "function") != "function"):
        raise _NotACall
    arguments, repaired = _arguments(obj.get(key) if key else None)
    return _Call(name.strip(), arguments, repaired)


def _calls_from_json(value: Any, strict: bool, repaired: bool) -> list[_Call]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _NotACall
    calls = [_call_from_object(item, strict) for item in items]
    if repaired:
        for call in calls:
            call.repaired = True
    return calls


def _occurrences(s: str, marker: str) -> Iterator[int]:
    i = s.find(marker)
    while i >= 0:
        yield i
        i = s.find(marker, i + len(marker))


def _region(s: str, begin: int, opener: str, closer: str | None) -> tuple[int, int]:
    """(end of the payload, end of the block): up to the closing tag, else the next opening tag or the end."""
    nxt = s.find(opener, begin)
    stop = len(s) if nxt < 0 else nxt
    if closer:
        close = s.find(closer, begin, stop)
        if close >= 0:
            return close, close + len(closer)
    return stop, -1


_TRAILING_JUNK = re.compile(r"[\s}\]);,>]*")


def _read_calls(s: str, pos: int, limit: int) -> tuple[list[_Call], int]:
    """The call objects (or lists of them) one after another from s[pos], up to `limit`, separated by
    whitespace, "," or ";" -> (calls, end)."""
    calls: list[_Call] = []
    while (found := _read_json(s, pos, limit)) is not None:
        value, pos, repaired = found
        calls += _calls_from_json(value, False, repaired)
        pos = _skip_ws(s, pos, limit)
        if pos < limit and s[pos] in ",;":
            pos += 1
    return calls, pos


def _json_blocks(s: str, opener: str, closer: str | None) -> list[_Block]:
    """Blocks `opener JSON [JSON ...] closer`: one or more call objects or lists of them."""
    blocks: list[_Block] = []
    for start in _occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = _region(s, begin, opener, closer)
        try:
            calls, pos = _read_calls(s, begin, payload_end)
        except _NotACall:
            continue
        if not calls:
            continue
        end = pos
        if block_end >= 0:  # a closed block holds calls only (a stray bracket is repaired)
            junk = s[pos:payload_end]
            if junk.strip():
                if _TRAILING_JUNK.fullmatch(junk) is None:
                    continue
                for call in calls:
                    call.repaired = True
            end = block_end
        blocks.append(_Block(start, end, calls))
    return blocks


# --- values of the markup formats (Qwen3-Coder, GLM, MiniMax) ----------------------------------------


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


_FUNCTION_TAG = re.compile(r"<function=([^>\n]+)>")
_PARAMETER_TAG = re.compile(r"<parameter=([^>\n]+)>")


def _xml_function(s: str, start: int, limit: int) -> tuple[_Call, int] | None:
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
    return _Call(m.group(1).strip(), arguments, repaired), end


def _wrapped_xml_functions(s: str, opener: str, closer: str) -> list[_Block]:
    blocks: list[_Block] = []
    for start in _occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = _region(s, begin, opener, closer)
        pos = _skip_ws(s, begin, payload_end)
        calls: list[_Call] = []
        while pos < payload_end and s.startswith("<function=", pos):
            found = _xml_function(s, pos, payload_end)
            if found is None:
                break
            call, pos = found
            calls.append(call)
            pos = _skip_ws(s, pos, payload_end)
        if calls and (block_end >= 0 or pos >= payload_end):
            if block_end < 0:
                for call in calls:
                    call.repaired = True
            blocks.append(_Block(start, block_end if block_end >= 0 else payload_end, calls))
    return blocks


# --- the formats ----------------------------------------------------------------------------------


def _hermes(s: str) -> list[_Block]:
    # Qwen2.5/Qwen3, Hermes 2 Pro/3, SmolLM3, Granite 4: <tool_call>{"name": ..., "arguments": ...}</tool_call>
    return _json_blocks(s, "<tool_call>", "</tool_call>")


def _qwen3_coder(s: str) -> list[_Block]:
    # Qwen3-Coder, Qwen3.5+, Nemotron 3 Nano:
    # <tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>
    blocks = _wrapped_xml_functions(s, "<tool_call>", "</tool_call>")
    taken = [(b.start, b.end) for b in blocks]
    starts = [a for a, _ in taken]
    for m in _FUNCTION_TAG.finditer(s):  # the same without the <tool_call> wrapper
        if _inside(taken, starts, m.start()):
            continue
        after = _skip_ws(s, m.end(), len(s))
        if not (s.startswith("<parameter=", after) or s.startswith("</function>", after)):
            continue
        nxt = s.find("<function=", m.end())
        found = _xml_function(s, m.start(), len(s) if nxt < 0 else nxt)
        if found is not None:
            blocks.append(_Block(m.start(), found[1], [found[0]]))
    blocks.sort(key=lambda b: b.start)
    return blocks


_GLM_HEAD = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*")
_GLM_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


def _glm(s: str) -> list[_Block]:
    # GLM-4.5/4.6/4.7: <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>
    blocks: list[_Block] = []
    for start in _occurrences(s, "<tool_call>"):
        begin = start + len("<tool_call>")
        payload_end, block_end = _region(s, begin, "<tool_call>", "</tool_call>")
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
        blocks.append(_Block(start, block_end, [_Call(head.group(1), arguments, False)]))
    return blocks


def _seed_oss(s: str) -> list[_Block]:
    # ByteDance Seed-OSS: <seed:tool_call><function=NAME><parameter=K>V</parameter></function></seed:tool_call>
    return _wrapped_xml_functions(s, "<seed:tool_call>", "</seed:tool_call>")


_INVOKE = re.compile(r"\s*<invoke name=\"([^\"]+)\">(.*?)</invoke>", re.S)
_MINIMAX_PARAMETER = re.compile(r"\s*<parameter name=\"([^\"]+)\">(.*?)</parameter>", re.S)


def _minimax(s: str) -> list[_Block]:
    # MiniMax-M2: <minimax:tool_call><invoke name="NAME"><parameter name="K">V</parameter></invoke></minimax:tool_call>
    blocks: list[_Block] = []
    for start in _occurrences(s, "<minimax:tool_call>"):
        begin = start + len("<minimax:tool_call>")
        payload_end, block_end = _region(s, begin, "<minimax:tool_call>", "</minimax:tool_call>")
        calls: list[_Call] = []
        pos = begin
        while (inv := _INVOKE.match(s, pos, payload_end)) is not None:
            arguments: dict[str, Any] = {}
            body = inv.group(2)
            at = 0
            while (p := _MINIMAX_PARAMETER.match(body, at)) is not None:
                arguments[p.group(1)] = _markup_value(p.group(2), trim_newlines=False)
                at = p.end()
            if body[at:].strip():
                break
            calls.append(_Call(inv.group(1), arguments, False))
            pos = inv.end()
        if calls and not s[pos:payload_end].strip():
            blocks.append(_Block(start, block_end if block_end >= 0 else payload_end, calls))
    return blocks


_MISTRAL_NAMED = re.compile(r"([A-Za-z_][\w.\-]*)(?:\[CALL_ID\][^\[]*)?(?:\[ARGS\])?")


def _mistral(s: str) -> list[_Block]:
    # Mistral v3: [TOOL_CALLS] [{"name": ..., "arguments": ...}]; v11+ (Devstral, Magistral, Ministral 3,
    # Mistral Small 3.2): [TOOL_CALLS]NAME[ARGS]{...} (also [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{...})
    blocks: list[_Block] = []
    marker = "[TOOL_CALLS]"
    for start in _occurrences(s, marker):
        payload_end, _ = _region(s, start + len(marker), marker, None)
        pos = _skip_ws(s, start + len(marker), payload_end)
        try:
            if pos < payload_end and s[pos] in "[{":
                found = _read_json(s, pos, payload_end)
                if found is None:
                    continue
                value, end, repaired = found
                calls = _calls_from_json(value, False, repaired)
            else:
                named = _MISTRAL_NAMED.match(s, pos, payload_end)
                if named is None:
                    continue
                found = _read_json(s, named.end(), payload_end)
                if found is None or not isinstance(found[0], dict):
                    continue
                value, end, repaired = found
                calls = [_Call(named.group(1), value, repaired)]
        except _NotACall:
            continue
        blocks.append(_Block(start, end, calls))
    return blocks


def _lmstudio(s: str) -> list[_Block]:
    # LM Studio's own format for models without native tool use ("Default" tool use):
    # [TOOL_REQUEST]{"name": ..., "arguments": ...}[END_TOOL_REQUEST]
    return _json_blocks(s, "[TOOL_REQUEST]", "[END_TOOL_REQUEST]")


def _llama_python_tag(s: str) -> list[_Block]:
    # Llama 3.1/3.2/3.3: <|python_tag|>{"name": ..., "parameters": ...} (calls separated by ";"),
    # and the built-in tools: <|python_tag|>brave_search.call(query="...")
    marker = "<|python_tag|>"
    blocks = _json_blocks(s, marker, "<|eom_id|>")
    taken = {b.start for b in blocks}
    for start in _occurrences(s, marker):
        if start in taken:
            continue
        begin = start + len(marker)
        line_end = s.find("\n", begin)
        stop = len(s) if line_end < 0 else line_end
        source = s[begin:stop].replace("<|eom_id|>", "").replace("<|eot_id|>", "")
        calls = _python_calls(source.strip(), expression=True)
        if calls is None or len(calls) != 1 or not calls[0].name.endswith(".call"):
            continue
        calls[0].name = calls[0].name[: -len(".call")]
        blocks.append(_Block(start, stop, calls))
    blocks.sort(key=lambda b: b.start)
    return blocks


_LLAMA_FUNCTION = re.compile(r"<function=([A-Za-z_][\w.\-]*)>")


def _llama_function(s: str) -> list[_Block]:
    # Llama 3.1 custom tool calling, Functionary v3.1: <function=NAME>{"arg": ...}</function>
    blocks: list[_Block] = []
    for m in _LLAMA_FUNCTION.finditer(s):
        payload_end, block_end = _region(s, m.end(), "<function=", "</function>")
        found = _read_json(s, m.end(), payload_end)
        if found is None or not isinstance(found[0], dict):
            continue
        value, end, repaired = found
        if block_end >= 0:
            if s[end:payload_end].strip():
                continue
            end = block_end
        block = _Block(m.start(), end, [_Call(m.group(1), value, repaired)])
        before = _preceded_by(s, block.start, "<tool_call>")  # some models wrap it in Hermes tags
        after = _skip_ws(s, block.end, len(s))
        if before >= 0 and s.startswith("</tool_call>", after):
            block.start, block.end = before, after + len("</tool_call>")
        blocks.append(block)
    return blocks


_FUNCTOOLS = re.compile(r"functools\s*(?=\[)")


def _functools(s: str) -> list[_Block]:
    # FireFunction v2: functools[{"name": ..., "arguments": ...}]
    blocks: list[_Block] = []
    for m in _FUNCTOOLS.finditer(s):
        found = _read_json(s, m.end(), len(s))
        if found is None:
            continue
        value, end, repaired = found
        try:
            blocks.append(_Block(m.start(), end, _calls_from_json(value, False, repaired)))
        except _NotACall:
            continue
    return blocks


# DeepSeek's markers: fullwidth bars (U+FF5C) and "▁" (U+2581) for spaces, which models also write as "_" or " "
_B = "\uff5c"
_SP = "[\u2581_ ]"
_SP_RE = re.compile(_SP)
_DS_MARKER = re.compile(f"<{_B}tool{_SP}(calls{_SP}begin|calls{_SP}end|call{_SP}begin|call{_SP}end|sep){_B}>")
_FENCED_BODY = re.compile(r"\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*\Z", re.S)


def _deepseek_call(head: str, body: str) -> _Call:
    head = head.strip()
    if head == "function":  # R1: "function", the separator, NAME, then the arguments in a ```json fence
        name, _, body = body.partition("\n")
        head = name.strip()
        fenced = _FENCED_BODY.match(body)
        if fenced is not None:
            body = fenced.group(1)
    found = _read_json(body, 0, len(body))
    if not head or found is None or body[found[1] :].strip():
        raise _NotACall
    value, _, repaired = found
    if isinstance(value, str):
        value, repaired = _arguments(value)
    if not isinstance(value, dict):
        raise _NotACall
    return _Call(head, value, repaired)


class _DeepSeekReader:
    """Reads the markers in order (one pass): a section of calls, or a call on its own, is one block."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.blocks: list[_Block] = []
        self.block: _Block | None = None
        self.in_section = False
        self.bad = False  # a call in the block is not one: the block stays text
        self.head = -1  # where the current call's name starts; -1 outside a call
        self.sep: re.Match[str] | None = None

    def read(self) -> list[_Block]:
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
                self.block, self.in_section = _Block(m.start(), m.end(), []), True
            elif kind == "call" and not ends:
                if self.block is None:
                    self.block, self.in_section = _Block(m.start(), m.end(), []), False
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
                raise _NotACall
            self.block.calls.append(
                _deepseek_call(self.s[self.head : self.sep.start()], self.s[self.sep.end() : body_end])
            )
        except _NotACall:
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


def _deepseek(s: str) -> list[_Block]:
    # DeepSeek V3/V3.1, R1 and its distills: <(tool calls begin)><(tool call begin)>NAME<(tool sep)>{...}
    # <(tool call end)><(tool calls end)>, each marker between fullwidth bars (docs/local-models.md)
    return _DeepSeekReader(s).read()


_KIMI_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>(.*?)"
    r"(?:<\|tool_call_end\|>|(?=<\|tool_call_begin\|>)|(?=<\|tool_calls_section_end\|>)|\Z)",
    re.S,
)


def _kimi_k2(s: str) -> list[_Block]:
    # Kimi K2: <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}
    # <|tool_call_end|><|tool_calls_section_end|>
    blocks: list[_Block] = []
    for m in _KIMI_CALL.finditer(s):
        body = m.group(2)
        found = _read_json(body, 0, len(body))
        if found is None or not isinstance(found[0], dict) or body[found[1] :].strip():
            continue
        blocks.append(_Block(m.start(), m.end(), [_Call(m.group(1), found[0], found[2])]))
    # the section markers around kept calls go with them
    for b in blocks:
        before = _preceded_by(s, b.start, "<|tool_calls_section_begin|>")
        if before >= 0:
            b.start = before
        after = _skip_ws(s, b.end, len(s))
        if s.startswith("<|tool_calls_section_end|>", after):
            b.end = after + len("<|tool_calls_section_end|>")
    return blocks


def _granite(s: str) -> list[_Block]:
    # Granite 3.x: <|tool_call|>[{"name": ..., "arguments": ...}]
    return _json_blocks(s, "<|tool_call|>", None)


def _nemotron(s: str) -> list[_Block]:
    # Nemotron Nano v2: <TOOLCALL>[{"name": ..., "arguments": ...}]</TOOLCALL>
    return _json_blocks(s, "<TOOLCALL>", "</TOOLCALL>")


def _tool_calls_tag(s: str) -> list[_Block]:
    # Apriel 1.5/1.6: <tool_calls>[{...}]</tool_calls>; MiniMax-M1: <tool_calls>\n{...}\n{...}\n</tool_calls>
    return _json_blocks(s, "<tool_calls>", "</tool_calls>")


def _command_r(s: str) -> list[_Block]:
    # Command R7B: <|START_ACTION|>[{"tool_call_id": "0", "tool_name": ..., "parameters": {...}}]<|END_ACTION|>
    return _json_blocks(s, "<|START_ACTION|>", "<|END_ACTION|>")


# --- Gemma's call notation: call:NAME{key:<escape>text<escape>,n:5} ---------------------------------

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
    k = _skip_ws(s, word.end(), limit)
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


def _gemma_blocks(s: str, opener: str, closer: str, quote: str) -> list[_Block]:
    blocks: list[_Block] = []
    for start in _occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = _region(s, begin, opener, closer)
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
        blocks.append(_Block(start, end, [_Call(head.group(1), arguments, False)]))
    return blocks


def _function_gemma(s: str) -> list[_Block]:
    # FunctionGemma: <start_function_call>call:NAME{key:<escape>text<escape>}<end_function_call>
    return _gemma_blocks(s, "<start_function_call>", "<end_function_call>", "<escape>")


def _gemma4(s: str) -> list[_Block]:
    # Gemma 4: <|tool_call>call:NAME{key:<|"|>text<|"|>}<tool_call|>
    return _gemma_blocks(s, "<|tool_call>", "<tool_call|>", '<|"|>')


# --- Python call syntax (LFM2, Llama 3.2/4 zero-shot, Gemma 3 tool_code) ------------------------------


def _literal(node: ast.expr) -> Any:
    """A literal value (never evaluated: only constants, containers and true/false/null)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = _literal(k) if k is not None else None
            if not isinstance(key, str):
                raise _NotACall
            out[key] = _literal(v)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NotACall
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMED_LITERALS:
        return _NAMED_LITERALS[node.id]
    raise _NotACall


_NAMED_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + "." + node.attr
    raise _NotACall


def _python_call(node: ast.expr) -> _Call:
    if isinstance(node, ast.Call) and _dotted(node.func) == "print" and len(node.args) == 1 and not node.keywords:
        node = node.args[0]  # Gemma 3 sometimes writes print(name(...))
    if not isinstance(node, ast.Call) or node.args:  # positional arguments have no names: never guessed
        raise _NotACall
    arguments: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _NotACall
        arguments[kw.arg] = _literal(kw.value)
    return _Call(_dotted(node.func), arguments, False)


def _python_calls(source: str, *, expression: bool) -> list[_Call] | None:
    """Calls in Python syntax: one expression (a call or a list of calls), or statements that are calls."""
    try:
        if expression:
            body = ast.parse(source, mode="eval").body
            nodes = list(body.elts) if isinstance(body, (ast.List, ast.Tuple)) else [body]
        else:
            module = ast.parse(source, mode="exec")
            if not all(isinstance(st, ast.Expr) for st in module.body):
                return None
            nodes = [st.value for st in module.body if isinstance(st, ast.Expr)]
        if not nodes:
            return None
        return [_python_call(n) for n in nodes]
    except (SyntaxError, ValueError, RecursionError, MemoryError, _NotACall):
        return None


def _lfm2(s: str) -> list[_Block]:
    # LFM2/LFM2.5: <|tool_call_start|>[name(arg="value")]<|tool_call_end|>
    blocks: list[_Block] = []
    for start in _occurrences(s, "<|tool_call_start|>"):
        begin = start + len("<|tool_call_start|>")
        payload_end, block_end = _region(s, begin, "<|tool_call_start|>", "<|tool_call_end|>")
        if block_end < 0:
            continue
        calls = _python_calls(s[begin:payload_end].strip(), expression=True)
        if calls:
            blocks.append(_Block(start, block_end, calls))
    return blocks


_TOOL_CODE = re.compile(r"```tool_code[ \t]*\n(.*?)```", re.S)


def _gemma_tool_code(s: str) -> list[_Block]:
    # Gemma 3 (Google's function-calling guide): ```tool_code\nname(arg="value")\n```
    blocks: list[_Block] = []
    for m in _TOOL_CODE.finditer(s):
        calls = _python_calls(m.group(1).strip(), expression=False)
        if calls:
            blocks.append(_Block(m.start(), m.end(), calls))
    return blocks


_PY_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


def _line_starts_at(s: str, i: int) -> bool:
    """Only spaces or tabs between the line's start and s[i]."""
    j = i - 1
    while j >= 0 and s[j] in " \t":
        j -= 1
    return j < 0 or s[j] == "\n"


def _bracket_end(s: str, i: int, limit: int) -> int | None:
    """The end of the bracketed Python expression at s[i] (strings in ' or " skipped), or None."""
    depth = 0
    quote = ""
    j = i
    while j < limit:
        ch = s[j]
        if quote:
            if ch == "\\":
                j += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def _pythonic(s: str) -> list[_Block]:
    # Llama 3.2 / Llama 4 zero-shot function calling, LFM2 without its markers: a line that is
    # exactly a list of calls, [name(arg="value"), other()]
    blocks: list[_Block] = []
    i = s.find("[")
    while i >= 0:
        end = None
        line_end = s.find("\n", i)
        line_end = len(s) if line_end < 0 else line_end
        if _line_starts_at(s, i) and _PY_LIST_START.match(s, i, line_end) is not None:
            end = _bracket_end(s, i, line_end)
        calls = _python_calls(s[i:end], expression=True) if end is not None and not s[end:line_end].strip() else None
        if calls and end is not None:
            blocks.append(_Block(i, end, calls))
            i = s.find("[", end)
            continue
        i = s.find("[", i + 1)
    return blocks


# --- JSON without markers -------------------------------------------------------------------------------

_FENCE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)```", re.S)
_ACTION = re.compile(r"(?:(?<=\n)|(?<![\s\S]))Action:[ \t]*\n?[ \t]*\Z")
_JSON_FENCE_LANGUAGES = frozenset({"", "json", "json5", "tool_call", "tool_calls", "tool", "function_call"})


def _fenced_json(s: str) -> list[_Block]:
    # a ```json fence holding only a call object (or a list of them)
    blocks: list[_Block] = []
    if "{" not in s:
        return blocks
    for m in _FENCE.finditer(s):
        if m.group(1).lower() not in _JSON_FENCE_LANGUAGES:
            continue
        body = m.group(2)
        found = _read_json(body, 0, len(body))
        if found is None or body[found[1] :].strip():
            continue
        try:
            block = _Block(m.start(), m.end(), _calls_from_json(found[0], True, found[2]))
        except _NotACall:
            continue
        action = _ACTION.search(s, max(0, block.start - 20), block.start)  # Command R+: "Action:" before it
        if action is not None:
            block.start = action.start()
        blocks.append(block)
    return blocks


_CALL_OBJECT_START = re.compile(r"(?:\[\s*)?\{\s*[\"']?(?:name|type|function|tool_name)[\"']?\s*:")


def _bare_json(s: str) -> list[_Block]:
    # Llama 3.x/4 ({"name": ..., "parameters": ...}), Mistral without its [TOOL_CALLS] token,
    # and any model told to "answer with JSON": a call object, or a list of them, outside code fences
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(s)] if "```" in s else []
    fence_starts = [a for a, _ in fences]
    blocks: list[_Block] = []
    pos = 0
    n = len(s)
    while True:
        brace = s.find("{", pos)
        if brace < 0:
            return blocks
        start = brace
        bracket = s.rfind("[", pos, brace)
        if bracket >= 0 and not s[bracket + 1 : brace].strip():
            start = bracket
        if _CALL_OBJECT_START.match(s, start) is None or _inside(fences, fence_starts, start):
            pos = brace + 1
            continue
        found = _read_json(s, start, n)
        if found is None:
            pos = brace + 1
            continue
        value, end, repaired = found
        with contextlib.suppress(_NotACall):
            blocks.append(_Block(start, end, _calls_from_json(value, True, repaired)))
        pos = max(end, brace + 1)


_Parser = Callable[[str], list[_Block]]

# most specific first: the first format that yields a call to an offered tool wins
_FORMATS: tuple[tuple[str, tuple[str, ...], _Parser], ...] = (
    ("hermes", ("<tool_call>",), _hermes),
    ("seed_oss", ("<seed:tool_call>",), _seed_oss),
    ("qwen3_coder", ("<function=",), _qwen3_coder),
    ("glm", ("<tool_call>",), _glm),
    ("minimax", ("<minimax:tool_call>",), _minimax),
    ("mistral", ("[TOOL_CALLS]",), _mistral),
    ("lmstudio", ("[TOOL_REQUEST]",), _lmstudio),
    ("llama_python_tag", ("<|python_tag|>",), _llama_python_tag),
    ("llama_function", ("<function=",), _llama_function),
    ("functools", ("functools",), _functools),
    ("deepseek", ("<\uff5ctool",), _deepseek),
    ("kimi_k2", ("<|tool_call_begin|>",), _kimi_k2),
    ("granite", ("<|tool_call|>",), _granite),
    ("gemma4", ("<|tool_call>",), _gemma4),
    ("function_gemma", ("<start_function_call>",), _function_gemma),
    ("lfm2", ("<|tool_call_start|>",), _lfm2),
    ("nemotron", ("<TOOLCALL>",), _nemotron),
    ("tool_calls_tag", ("<tool_calls>",), _tool_calls_tag),
    ("command_r", ("<|START_ACTION|>",), _command_r),
    ("gemma_tool_code", ("```tool_code",), _gemma_tool_code),
    ("fenced_json", ("```",), _fenced_json),
    ("bare_json", ("{",), _bare_json),
    ("pythonic", ("[",), _pythonic),
)

FORMATS: tuple[str, ...] = tuple(name for name, _, _ in _FORMATS)
