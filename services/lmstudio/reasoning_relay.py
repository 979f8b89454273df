"""LM Studio's chat answers relayed with the model's `<think>` text moved out of `content` into
`reasoning_content`, as LM Studio itself does with reasoning separation on. Answers without such
tags (the usual case) pass through byte for byte."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from services.lmstudio.reasoning import ReasoningStream, split_reasoning

_MARKS = (b"think>", b"thinking>", b"THINK]")


def _has_marks(raw: bytes) -> bool:
    return any(mark in raw for mark in _MARKS)


def separate_reasoning(raw: bytes) -> bytes:
    """A `chat.completion` body with reasoning moved to `message.reasoning_content`."""
    if not _has_marks(raw):
        return raw
    try:
        body = json.loads(raw)
        message = body["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return raw
    content = message.get("content")
    if not isinstance(content, str):
        return raw
    reasoning, answer = split_reasoning(content)
    if reasoning is None:
        return raw
    message["content"] = answer
    earlier = message.get("reasoning_content")
    message["reasoning_content"] = f"{earlier}\n\n{reasoning}" if isinstance(earlier, str) and earlier else reasoning
    return json.dumps(body).encode()


class _StreamSplitter:
    """Rewrites the SSE events of a streamed chat. While the splitter is idle (in the answer, nothing held back),
    only an event with a `<` or `[` in it is parsed, and it comes back byte for byte unless a tag (or the start of
    one) was found in it."""

    def __init__(self) -> None:
        self.splitter = ReasoningStream()

    def event(self, event: bytes) -> bytes:
        idle = self.splitter.idle
        if idle and not (b"<" in event or b"[" in event):
            return event
        if not event.startswith(b"data: {"):
            return event
        try:
            chunk: Any = json.loads(event[6:])
            choice = chunk["choices"][0]
            delta = choice["delta"]
        except (ValueError, KeyError, IndexError, TypeError):
            return event
        content = delta.get("content")
        reasoning, text = self.splitter.feed(content) if isinstance(content, str) else ("", "")
        if choice.get("finish_reason") is not None:
            more_reasoning, more_text = self.splitter.flush()
            reasoning, text = reasoning + more_reasoning, text + more_text
        if idle and self.splitter.idle and not reasoning and text == (content if isinstance(content, str) else ""):
            return event  # no tag in it after all: as it came
        if isinstance(content, str) or reasoning or text:
            delta["content"] = text
            if reasoning:
                delta["reasoning_content"] = reasoning
        return b"data: " + json.dumps(chunk).encode()


async def separate_reasoning_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A streamed `chat.completion.chunk` SSE body with reasoning moved to `delta.reasoning_content`
    (a tag split across chunks included)."""
    rewriter = _StreamSplitter()
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n\n" not in buffer:
            continue
        *events, buffer = buffer.split(b"\n\n")
        yield b"".join(rewriter.event(event) + b"\n\n" for event in events)
    if buffer:
        yield rewriter.event(buffer)
