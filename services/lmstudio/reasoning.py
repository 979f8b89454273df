"""Reasoning that models write into `content`, kept apart from the answer (pure: no I/O).

Reasoning models put their thinking in `<think>…</think>` (DeepSeek R1 and its distills, Qwen3, QwQ,
GLM), `<thinking>…</thinking>`, or `[THINK]…[/THINK]` (Magistral, Ministral 3 reasoning). A template
that opens the block in the prompt leaves only its end in the answer: `…</think>answer`.
`split_reasoning` splits a whole answer; `ReasoningStream` splits one as it streams.
"""

from __future__ import annotations

_PAIRS: tuple[tuple[str, str], ...] = (("<think>", "</think>"), ("<thinking>", "</thinking>"), ("[THINK]", "[/THINK]"))
_OPENERS = tuple(o for o, _ in _PAIRS)
_CLOSERS = tuple(c for _, c in _PAIRS)
_CLOSER_OF = dict(_PAIRS)
_ANY_TAG = _OPENERS + _CLOSERS


def _might_hold_tags(content: str) -> bool:
    return "think>" in content or "thinking>" in content or "THINK]" in content


def _first(content: str, tags: tuple[str, ...], start: int) -> tuple[int, str]:
    """The earliest of `tags` in content[start:] -> (index, tag); (-1, "") when none is there."""
    best, found = -1, ""
    for tag in tags:
        i = content.find(tag, start)
        if i >= 0 and (best < 0 or i < best):
            best, found = i, tag
    return best, found


class _Tags:
    """Where each tag next occurs in a text, searched again only once passed (one pass over the text)."""

    __slots__ = ("_next", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._next = {tag: text.find(tag) for tag in _ANY_TAG}

    def first(self, tags: tuple[str, ...], start: int) -> tuple[int, str]:
        best, found = -1, ""
        for tag in tags:
            i = self._next[tag]
            if 0 <= i < start:
                i = self._next[tag] = self._text.find(tag, start)
            if i >= 0 and (best < 0 or i < best):
                best, found = i, tag
        return best, found


def split_reasoning(content: str | None) -> tuple[str | None, str | None]:
    """(reasoning, answer) of a model's content; each is None when empty. Content without reasoning
    tags comes back unchanged as the answer.

    - `<think>a</think>b` -> ("a", "b"); several blocks are joined by a blank line;
    - an opening tag that never closes: the rest is reasoning (the answer was cut off while thinking);
    - a closing tag before any opening tag: what precedes it is reasoning (the template opened it);
      a closing tag later in the answer, with no block open, is dropped.
    """
    if content is None or not _might_hold_tags(content):
        return None, content
    reasoning: list[str] = []
    answer: list[str] = []
    pos = 0
    tags = _Tags(content)
    opener_at, _ = tags.first(_OPENERS, 0)
    closer_at, closer = tags.first(_CLOSERS, 0)
    if closer_at >= 0 and (opener_at < 0 or closer_at < opener_at):  # `…</think>answer`
        reasoning.append(content[:closer_at])
        pos = closer_at + len(closer)
    elif opener_at < 0:
        return None, content
    while True:
        at, tag = tags.first(_ANY_TAG, pos)
        if at < 0:
            answer.append(content[pos:])
            break
        answer.append(content[pos:at])
        start = at + len(tag)
        if tag not in _CLOSER_OF:  # a stray closing tag in the answer is dropped
            pos = start
            continue
        end, _ = tags.first((_CLOSER_OF[tag],), start)
        if end < 0:
            reasoning.append(content[start:])
            break
        reasoning.append(content[start:end])
        pos = end + len(_CLOSER_OF[tag])
    thought = "\n\n".join(part.strip() for part in reasoning if part.strip())
    said = "".join(answer).strip()
    return thought or None, said or None


def _held_prefix(text: str, tags: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that could be the start of one of `tags`."""
    longest = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:n]):
                longest = n
                break
    return longest


class ReasoningStream:
    """Splits streamed content into reasoning and answer as it arrives.

    `feed(chunk)` returns (reasoning, content) of what can be decided so far: only the end of the text
    that could still become a tag (`<thi`) is held back, until the next chunk or `flush()`.
    `opened=True` when the prompt already opened the block (the template ends with `<think>`): the
    stream starts as reasoning. A stream cannot take back what it sent, so without `opened` a lone
    closing tag is dropped and the text before it stays content (`split_reasoning` of the whole answer
    makes it reasoning).
    """

    __slots__ = ("_closers", "_pending", "_said_reasoning", "_separate", "_skip_space")

    def __init__(self, opened: bool = False) -> None:
        self._closers: tuple[str, ...] = _CLOSERS if opened else ()  # () while in the answer
        self._pending = ""
        self._said_reasoning = False
        self._separate = False  # a new block starts: a blank line before its first words
        self._skip_space = opened

    @property
    def in_reasoning(self) -> bool:
        return bool(self._closers)

    @property
    def idle(self) -> bool:
        """In the answer with nothing held back and no layout to drop: text without a tag passes unchanged."""
        return not (self._closers or self._pending or self._skip_space)

    def feed(self, chunk: str) -> tuple[str, str]:
        text = self._pending + chunk
        self._pending = ""
        reasoning: list[str] = []
        content: list[str] = []
        while text:
            tags = self._closers or _ANY_TAG
            at, tag = _first(text, tags, 0)
            if at < 0:
                keep = _held_prefix(text, tags)
                self._emit(text[: len(text) - keep], reasoning, content)
                self._pending = text[len(text) - keep :]
                break
            self._emit(text[:at], reasoning, content)
            text = text[at + len(tag) :]
            if tag in _CLOSER_OF:  # an opening tag
                self._closers = (_CLOSER_OF[tag],)
                self._separate = self._said_reasoning
            else:  # a closing tag: the block ends (alone in the answer, it is dropped)
                self._closers = ()
            self._skip_space = True
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """What was held back (it was text, not a tag)."""
        reasoning: list[str] = []
        content: list[str] = []
        self._emit(self._pending, reasoning, content)
        self._pending = ""
        return "".join(reasoning), "".join(content)

    def _emit(self, text: str, reasoning: list[str], content: list[str]) -> None:
        if self._skip_space:  # the space right after a tag is layout
            text = text.lstrip()
            if text:
                self._skip_space = False
        if not text:
            return
        if not self._closers:
            content.append(text)
            return
        if self._separate:
            reasoning.append("\n\n")
            self._separate = False
        reasoning.append(text)
        self._said_reasoning = True
