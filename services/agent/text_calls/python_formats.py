"""Readers of calls written in Python syntax, `name(arg="value")`: LFM2, Gemma 3's tool_code fences,
Llama 3.2/4 zero-shot lists. The source is parsed, never run: only literal arguments count."""

from __future__ import annotations

import ast
import re
from typing import Any

from services.agent.text_calls.scan import Block, Call, NotACall, occurrences, region

_NAMED_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_TOOL_CODE = re.compile(r"```tool_code[ \t]*\n(.*?)(?:```|\Z)", re.S)  # unclosed: an answer cut after the call
_PY_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


# --- Python call syntax ---------------------------------------------------------------------------


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
                raise NotACall
            out[key] = _literal(v)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NotACall
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMED_LITERALS:
        return _NAMED_LITERALS[node.id]
    raise NotACall


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + "." + node.attr
    raise NotACall


def _python_call(node: ast.expr) -> Call:
    if isinstance(node, ast.Call) and _dotted(node.func) == "print" and len(node.args) == 1 and not node.keywords:
        node = node.args[0]  # Gemma 3 sometimes writes print(name(...))
    if not isinstance(node, ast.Call) or node.args:  # positional arguments have no names: never guessed
        raise NotACall
    arguments: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise NotACall
        arguments[kw.arg] = _literal(kw.value)
    return Call(_dotted(node.func), arguments, False)


def python_calls(source: str, *, expression: bool) -> list[Call] | None:
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
    except (SyntaxError, ValueError, RecursionError, MemoryError, NotACall):
        return None


# --- the formats ----------------------------------------------------------------------------------


def lfm2(s: str) -> list[Block]:
    # LFM2/LFM2.5: <|tool_call_start|>[name(arg="value")]<|tool_call_end|>
    blocks: list[Block] = []
    for start in occurrences(s, "<|tool_call_start|>"):
        begin = start + len("<|tool_call_start|>")
        payload_end, block_end = region(s, begin, "<|tool_call_start|>", "<|tool_call_end|>")
        if block_end < 0:
            continue
        calls = python_calls(s[begin:payload_end].strip(), expression=True)
        if calls:
            blocks.append(Block(start, block_end, calls))
    return blocks


def gemma_tool_code(s: str) -> list[Block]:
    # Gemma 3 (Google's function-calling guide): ```tool_code\nname(arg="value")\n```
    blocks: list[Block] = []
    for m in _TOOL_CODE.finditer(s):
        calls = python_calls(m.group(1).strip(), expression=False)
        if calls:
            blocks.append(Block(m.start(), m.end(), calls))
    return blocks


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


def pythonic(s: str) -> list[Block]:
    # Llama 3.2 / Llama 4 zero-shot function calling, LFM2 without its markers: a line that is
    # exactly a list of calls, [name(arg="value"), other()]
    blocks: list[Block] = []
    i = s.find("[")
    while i >= 0:
        end = None
        line_end = s.find("\n", i)
        line_end = len(s) if line_end < 0 else line_end
        if _line_starts_at(s, i) and _PY_LIST_START.match(s, i, line_end) is not None:
            end = _bracket_end(s, i, line_end)
        calls = python_calls(s[i:end], expression=True) if end is not None and not s[end:line_end].strip() else None
        if calls and end is not None:
            blocks.append(Block(i, end, calls))
            i = s.find("[", end)
            continue
        i = s.find("[", i + 1)
    return blocks
