"""LM Studio's chat answers relayed with `<think>` text moved to `reasoning_content`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.lmstudio.reasoning_relay import separate_reasoning, separate_reasoning_stream


def completion(content: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


def test_an_answer_without_tags_is_relayed_byte_for_byte() -> None:
    raw = completion("It is noon.") + b"  "
    assert separate_reasoning(raw) is raw


def test_think_blocks_move_to_reasoning_content() -> None:
    body = json.loads(separate_reasoning(completion("<think>check the clock</think>It is noon.")))
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("It is noon.", "check the clock")


def sse(*deltas: dict[str, object], finish: str = "stop") -> list[bytes]:
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


async def relay(chunks: list[bytes]) -> list[dict[str, object]]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    out = b"".join([part async for part in separate_reasoning_stream(source())])
    events = [e for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    return [json.loads(e[6:])["choices"][0]["delta"] for e in events]


@pytest.mark.parametrize("cut", range(1, 40))
async def test_a_tag_split_across_chunks_is_handled(cut: int) -> None:
    text = "<think>look it up</think>It is noon."
    stream = b"".join(sse({"content": text[:cut]}, {"content": text[cut:]}))
    for size in (7, 64, len(stream)):  # also split across network reads at arbitrary bytes
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        deltas = await relay(chunks)
        reasoning = "".join(str(d.get("reasoning_content", "")) for d in deltas)
        content = "".join(str(d.get("content", "")) for d in deltas)
        assert (reasoning, content) == ("look it up", "It is noon."), (cut, size)


async def test_a_stream_without_tags_is_untouched() -> None:
    chunks = sse({"role": "assistant", "content": ""}, {"content": "It is "}, {"content": "noon."})
    out = [part async for part in separate_reasoning_stream(_iter(chunks))]
    assert b"".join(out) == b"".join(chunks)


async def _iter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_angle_brackets_without_tags_pass_byte_for_byte() -> None:
    """Code and markdown (`<`, `[`) are parsed only to look for a tag: without one, every event comes back as it
    came (not re-encoded; compact JSON, as some servers write it, would differ), also after a held `<th` turned
    out to be text."""

    def event(content: str | None, finish: str | None = None) -> bytes:
        delta = {} if content is None else {"content": content}
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    chunks = [event("if a < b: x[0] = "), event("[link](u) <th"), event("e end>"), event(" [ok]"), event(None, "stop")]
    out = b"".join([part async for part in separate_reasoning_stream(_iter(chunks))]).split(b"\n\n")
    untouched = [chunks[i].removesuffix(b"\n\n") for i in (0, 3, 4)]
    assert [out[i] for i in (0, 3, 4)] == untouched  # 1 and 2: the held `<th` moved between them
    deltas = await relay(chunks)
    assert "".join(str(d.get("content", "")) for d in deltas) == "if a < b: x[0] = [link](u) <the end> [ok]"


async def test_after_a_think_block_events_pass_byte_for_byte_again() -> None:
    chunks = sse({"content": "<think>hm</think>"}, {"content": " It is"}, {"content": " a <b>noon</b>."})
    out = b"".join([part async for part in separate_reasoning_stream(_iter(chunks))]).split(b"\n\n")
    assert out[2] == chunks[2].removesuffix(b"\n\n")  # idle again: untouched although it holds `<`
    deltas = await relay(chunks)
    reasoning = "".join(str(d.get("reasoning_content", "")) for d in deltas)
    assert (reasoning, "".join(str(d.get("content", "")) for d in deltas)) == ("hm", "It is a <b>noon</b>.")
