"""What every reader shares: the call and block types, scanning the text, reading (and repairing) JSON."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import json_repair

REPAIR_LIMIT = 100_000  # characters: longer broken JSON stays text (json-repair takes seconds on megabytes)
_DECODER = json.JSONDecoder()
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "tool_call_id", "tool_name"})
_TRAILING_JUNK = re.compile(r"[\s}\]);,>]*")


@dataclass(slots=True)
class Call:
    """One call as a reader found it (the public `TextCall` holds its arguments as JSON text)."""

    name: str
    arguments: dict[str, Any]
    repaired: bool


@dataclass(slots=True)
class Block:
    """The span content[start:end] that holds the calls (taken out of the text when they are kept)."""

    start: int
    end: int
    calls: list[Call]


class NotACall(Exception):
    """The text looked like a call at first, but is not one in its format."""


# --- scanning -------------------------------------------------------------------------------------


def skip_ws(s: str, i: int, limit: int) -> int:
    while i < limit and s[i].isspace():
        i += 1
    return i


def preceded_by(s: str, i: int, tag: str) -> int:
    """Where `tag` starts when only whitespace separates it from s[i]; -1 when it does not."""
    while i > 0 and s[i - 1].isspace():
        i -= 1
    return i - len(tag) if s.startswith(tag, i - len(tag)) else -1


def inside(spans: list[tuple[int, int]], starts: list[int], i: int) -> bool:
    """Whether s[i] falls in one of the spans (sorted, not overlapping; `starts` are their starts)."""
    n = bisect.bisect_right(starts, i) - 1
    return n >= 0 and i < spans[n][1]


def occurrences(s: str, marker: str) -> Iterator[int]:
    i = s.find(marker)
    while i >= 0:
        yield i
        i = s.find(marker, i + len(marker))


def region(s: str, begin: int, opener: str, closer: str | None) -> tuple[int, int]:
    """(end of the payload, end of the block): up to the closing tag, else the next opening tag or the end."""
    nxt = s.find(opener, begin)
    stop = len(s) if nxt < 0 else nxt
    if closer:
        close = s.find(closer, begin, stop)
        if close >= 0:
            return close, close + len(closer)
    return stop, -1


# --- reading JSON ---------------------------------------------------------------------------------


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


def read_json(s: str, i: int, limit: int) -> tuple[Any, int, bool] | None:
    """The JSON object or array at s[i] (after whitespace): (value, end, repaired), or None."""
    i = skip_ws(s, i, limit)
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


def arguments_object(value: Any) -> tuple[dict[str, Any], bool]:
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
                raise NotACall from None
            try:
                parsed = json_repair.loads(text)
            except Exception:
                raise NotACall from None
            repaired = True
        if isinstance(parsed, dict):
            return parsed, repaired
    raise NotACall


# --- call objects in JSON -------------------------------------------------------------------------


def _call_from_object(obj: Any, strict: bool) -> Call:
    """A call object: {"name", "arguments"|"parameters"}, OpenAI's {"type": "function", "function": {...}},
    Command R's {"tool_name", "parameters"}. strict (no marker around it): only those keys, arguments present."""
    if not isinstance(obj, dict):
        raise NotACall
    if isinstance(obj.get("function"), dict):
        if strict and (set(obj) - {"function", "type", "id", "index"} or obj.get("type", "function") != "function"):
            raise NotACall
        obj = obj["function"]
    name = obj.get("name", obj.get("tool_name"))
    if not isinstance(name, str) or not name.strip():
        raise NotACall
    key = next((k for k in ("arguments", "parameters") if k in obj), None)
    if strict and (key is None or set(obj) - _CALL_KEYS or obj.get("type", "function") != "function"):
        raise NotACall
    arguments, repaired = arguments_object(obj.get(key) if key else None)
    return Call(name.strip(), arguments, repaired)


def calls_from_json(value: Any, strict: bool, repaired: bool) -> list[Call]:
    """The calls in a call object or a list of them (NotACall when one is not a call)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise NotACall
    calls = [_call_from_object(item, strict) for item in items]
    if repaired:
        for call in calls:
            call.repaired = True
    return calls


def _read_calls(s: str, pos: int, limit: int) -> tuple[list[Call], int]:
    """The call objects (or lists of them) one after another from s[pos], up to `limit`, separated by
    whitespace, "," or ";" -> (calls, end)."""
    calls: list[Call] = []
    while (found := read_json(s, pos, limit)) is not None:
        value, pos, repaired = found
        calls += calls_from_json(value, False, repaired)
        pos = skip_ws(s, pos, limit)
        if pos < limit and s[pos] in ",;":
            pos += 1
    return calls, pos


def json_blocks(s: str, opener: str, closer: str | None) -> list[Block]:
    """Blocks `opener JSON [JSON ...] closer`: one or more call objects or lists of them."""
    blocks: list[Block] = []
    for start in occurrences(s, opener):
        begin = start + len(opener)
        payload_end, block_end = region(s, begin, opener, closer)
        try:
            calls, pos = _read_calls(s, begin, payload_end)
        except NotACall:
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
        blocks.append(Block(start, end, calls))
    return blocks
