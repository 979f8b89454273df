"""Fitting a run's requests to the model's context window: the pure parts (budgets, tool ranking, cutting one
output, compacting history). `services/agent/fitting.py` applies them to a run; docs/context.md says why.

Between compactions the messages sent only grow at their end, so each request starts with exactly the text of
the previous one and the engine's prompt cache is reused; a compaction changes earlier text once, in a large
step (down to `COMPACT_TO` of the budget), so that several rounds fit before the next one.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# estimates a chat request's prompt tokens: (messages, tools) -> tokens
Estimate = Callable[[list[dict[str, Any]], list[dict[str, Any]]], int]

CUT_MARKER = "\n[... {omitted} of {total} characters cut by lmstudio-bridge to fit the context window; {how} ...]\n"
STUB = "[output of {name} ({chars} characters) left out to fit the context window; {how}]"
COMPACT_TO = 0.5  # a compaction brings the history down to this share of the prompt budget
MIN_CUT_CHARS = 200  # an output is never cut below this (its head and tail), however little room is left
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """How a window is shared (BRIDGE_CONTEXT_* settings)."""

    answer_share: float = 0.25  # max_tokens is clamped to this share of the window
    tools_share: float = 0.5  # tool schemas may take this share of the prompt budget
    margin_share: float = 0.05  # kept free for the estimate's error and the chat template

    def answer_tokens(self, window: int, requested: int) -> int:
        """The max_tokens a request may ask for in this window."""
        return min(requested, max(16, int(window * self.answer_share)))

    def prompt_budget(self, window: int, answer_tokens: int) -> int:
        """Tokens the prompt (messages + tools) may take."""
        return window - answer_tokens - math.ceil(window * self.margin_share)


@dataclass(slots=True)
class Fit:
    """One fitting action, as recorded in the run and sent as a `context.fitted` event."""

    round: int
    action: str  # tools | output | history | window
    tokens_before: int
    tokens_after: int
    detail: str


def json_tokens(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("_", " "))


def rank_tools(tools: Sequence[dict[str, Any]], query: str, favoured: frozenset[str] = frozenset()) -> list[int]:
    """Indexes of `tools` (OpenAI function tools), most relevant to `query` first: words of the query found in a
    tool's name and description, rarer words weighing more (BM25-like); `favoured` names come first, ties keep
    the original order."""
    docs = [_words(f"{tool_name(t)} {t['function'].get('description') or ''}") for t in tools]
    frequency = Counter(word for doc in docs for word in set(doc))
    wanted = set(_words(query))
    total = len(docs)

    def score(index: int) -> tuple[int, float, int]:
        doc = docs[index]
        counts = Counter(doc)
        value = 0.0
        for word in wanted & counts.keys():
            idf = math.log(1 + (total - frequency[word] + 0.5) / (frequency[word] + 0.5))
            tf = counts[word]
            value += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(doc) / 20))
        return (0 if tool_name(tools[index]) in favoured else 1, -value, index)

    return sorted(range(total), key=score)


def tool_name(tool: Mapping[str, Any]) -> str:
    """An OpenAI tool entry's function name."""
    return str(tool["function"]["name"])


def cut_middle(text: str, keep_chars: int, how: str) -> str:
    """`text` with its middle cut out to about `keep_chars` characters: the beginning (two thirds) and the end
    (one third) kept, between them a marker saying how much was cut and `how` to read more."""
    keep_chars = max(MIN_CUT_CHARS, keep_chars)
    if len(text) <= keep_chars:
        return text
    head = keep_chars * 2 // 3
    tail = keep_chars - head
    omitted = len(text) - head - tail
    marker = CUT_MARKER.format(omitted=omitted, total=len(text), how=how)
    cut = text[:head] + marker + (text[-tail:] if tail else "")
    return cut if len(cut) < len(text) else text  # a cut never makes an output longer


def read_part(text: str, offset: int, length: int) -> str:
    """`length` characters of a cut output from `offset`, headed by where they are and what is left."""
    part = text[offset : offset + length]
    after = offset + len(part)
    rest = f"; {len(text) - after} more from offset {after}" if after < len(text) else "; that is the end"
    return f"[characters {offset}-{after} of {len(text)}{rest}]\n{part}"


def chars_for_tokens(tokens: int, chars_per_token: float) -> int:
    return max(0, int(tokens * chars_per_token))


def compact(
    messages: list[dict[str, Any]],
    keep_head: int,
    keep_from: int,
    fits: Callable[[list[dict[str, Any]]], bool],
    stub: Callable[[dict[str, Any]], str],
) -> tuple[list[dict[str, Any]], int]:
    """Messages made to fit (`fits`), changing only those between `keep_head` (system prompt and task) and
    `keep_from` (the last round): older tool outputs replaced by a stub (`stub`, no side effects) first, as few
    as fit, oldest first; then whole older rounds dropped, oldest first. Returns the new list and how many
    messages were changed or dropped. The number stubbed (and dropped) is found by bisection: a few estimates
    of the whole request instead of one per message."""
    result = [dict(m) for m in messages]
    if fits(result):
        return result, 0
    older = [
        i for i in range(keep_head, keep_from) if result[i].get("role") == "tool" and not result[i].get("compacted")
    ]
    stubs: dict[int, dict[str, Any]] = {}

    def stubbed(count: int) -> list[dict[str, Any]]:
        """The messages with the `count` oldest outputs stubbed."""
        candidate = list(result)
        for index in older[:count]:
            if index not in stubs:
                stubs[index] = {**result[index], "content": stub(result[index]), "compacted": True}
            candidate[index] = stubs[index]
        return candidate

    count = _fewest(len(older), lambda n: fits(stubbed(n)))
    result = stubbed(len(older) if count is None else count)
    if count is not None:
        return result, count
    ends = []  # where each older round ends: an assistant message and the tool messages that answer it
    end = keep_head
    while end < keep_from:
        end += 1
        while end < keep_from and result[end].get("role") == "tool":
            end += 1
        ends.append(end)
    rounds = _fewest(len(ends), lambda n: fits(result[:keep_head] + result[ends[n - 1] :]))
    dropped = ends[(len(ends) if rounds is None else rounds) - 1] if ends else keep_head
    touched = len(older) + sum(1 for i in range(keep_head, dropped) if i not in stubs)
    return result[:keep_head] + result[dropped:], touched


def _fewest(most: int, fits: Callable[[int], bool]) -> int | None:
    """The fewest n in 1..`most` with `fits(n)` (0 is known not to fit; fewer n never fit when more do not);
    None when not even `most` fits."""
    if most == 0 or not fits(most):
        return None
    low, high = 0, most  # fits(high), not fits(low)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


def strip_marks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as sent: without the gateway's own bookkeeping keys."""
    return [{k: v for k, v in m.items() if k != "compacted"} if "compacted" in m else m for m in messages]
