"""Reasoning kept out of the answer: split_reasoning on whole answers, ReasoningStream on streamed ones
(cases in tests/data/local_model_answers/reasoning.json)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from services.lmstudio.reasoning import ReasoningStream, split_reasoning

CORPUS = json.loads(
    (Path(__file__).parents[2] / "data" / "local_model_answers" / "reasoning.json").read_text(encoding="utf-8")
)
SPLIT: list[dict[str, Any]] = CORPUS["split"]
STREAM: list[dict[str, Any]] = CORPUS["stream"]
TAGS = ("<think>", "</think>", "<thinking>", "</thinking>", "[THINK]", "[/THINK]")


def _words(text: str | None) -> str:
    """Text with its layout (runs of whitespace) ignored: a stream cannot strip what it already sent."""
    return " ".join((text or "").split())


def _stream(chunks: list[str], opened: bool = False) -> tuple[str, str]:
    stream = ReasoningStream(opened=opened)
    reasoning, content = [], []
    for chunk in chunks:
        r, c = stream.feed(chunk)
        reasoning.append(r)
        content.append(c)
    r, c = stream.flush()
    return "".join(reasoning) + r, "".join(content) + c


@pytest.mark.parametrize("case", SPLIT, ids=[c["id"] for c in SPLIT])
def test_split(case: dict[str, Any]) -> None:
    assert case["source"].strip()
    assert split_reasoning(case["content"]) == (case["reasoning"], case["answer"])


@pytest.mark.parametrize("case", STREAM, ids=[c["id"] for c in STREAM])
def test_stream(case: dict[str, Any]) -> None:
    assert case["source"].strip()
    reasoning, content = _stream(case["chunks"], case.get("opened", False))
    assert (_words(reasoning), _words(content)) == (_words(case["reasoning"]), _words(case["answer"]))


@pytest.mark.parametrize("case", SPLIT, ids=[c["id"] for c in SPLIT])
def test_stream_split_at_every_position_agrees_with_the_whole(case: dict[str, Any]) -> None:
    content, opened = case["content"], case.get("stream_opened", False)
    wanted = (_words(case["reasoning"]), _words(case["answer"]))
    for i in range(len(content) + 1):
        reasoning, answer = _stream([content[:i], content[i:]], opened)
        assert (_words(reasoning), _words(answer)) == wanted, f"split at {i}: {content[:i]!r} | {content[i:]!r}"
    assert tuple(map(_words, _stream(list(content), opened))) == wanted  # a character a chunk


def test_stream_split_at_every_pair_of_positions() -> None:
    content = "<think>a</think>b<thinking>c</thinking>d"
    wanted = (_words("a\n\nc"), "bd")
    for i in range(len(content) + 1):
        for j in range(i, len(content) + 1):
            got = _stream([content[:i], content[i:j], content[j:]])
            assert tuple(map(_words, got)) == wanted, (i, j)


def test_split_without_content() -> None:
    assert split_reasoning(None) == (None, None)
    assert split_reasoning("") == (None, "")
    assert split_reasoning("plain, with spaces  ") == (None, "plain, with spaces  ")  # untouched


def test_split_drops_a_stray_closing_tag_in_the_answer() -> None:
    assert split_reasoning("<think>a</think>b</think>c") == ("a", "bc")


def test_an_unclosed_block_after_the_answer_is_reasoning() -> None:
    assert split_reasoning("Answer.\n<think>more") == ("more", "Answer.")


def test_stream_holds_back_only_a_possible_tag() -> None:
    assert ReasoningStream().feed("abc<thi") == ("", "abc")
    assert ReasoningStream().feed("abc<b") == ("", "abc<b")
    assert ReasoningStream().feed("abc [TH") == ("", "abc ")
    assert ReasoningStream().feed("no tag at all") == ("", "no tag at all")
    inside = ReasoningStream()
    assert inside.feed("<think>x<") == ("x", "")
    assert inside.in_reasoning
    assert inside.feed("y") == ("<y", "")  # inside a block only its closing tag matters
    assert inside.feed("</think>z") == ("", "z")
    assert not inside.in_reasoning


@pytest.mark.parametrize("case", SPLIT, ids=[c["id"] for c in SPLIT])
def test_what_is_held_back_is_a_tag_prefix_and_no_more(case: dict[str, Any]) -> None:
    content = case["content"]
    for i in range(len(content) + 1):
        stream = ReasoningStream(opened=case.get("stream_opened", False))
        stream.feed(content[:i])
        held = "".join(stream.flush()).strip()
        assert held == "" or any(tag.startswith(held) and tag != held for tag in TAGS), (i, held)


def test_opened_stream_starts_in_reasoning() -> None:
    stream = ReasoningStream(opened=True)
    assert stream.in_reasoning
    assert stream.feed("  thinking</think>\n\nAnswer") == ("thinking", "Answer")


def test_a_lone_closing_tag_in_a_stream_that_was_not_opened_is_dropped() -> None:
    # the stream already sent the text before it as content; split_reasoning would call it reasoning
    assert _stream(["Let me see", "</think>", "Answer"]) == ("", "Let me seeAnswer")


def test_many_blocks_are_split_in_one_pass() -> None:
    content = "<think>x</think>y" * 50_000
    started = time.perf_counter()
    reasoning, answer = split_reasoning(content)
    assert time.perf_counter() - started < 1.0
    assert answer == "y" * 50_000 and reasoning is not None and reasoning.count("x") == 50_000


def test_a_second_block_is_set_apart() -> None:
    assert _stream(["<think>a</think>b<think>c</think>d"]) == ("a\n\nc", "bd")
