"""Tool calls local models write as text: the corpus in tests/data/local_model_answers/tool_calls.json,
each case written the way a model family's template or a public bug report shows it.

The recovery rate (printed by test_recovery_rate) is the share of the corpus's calls that come back
exactly: name, arguments, `repaired`, the text around them and the format's name. Cases marked
`known_miss` are calls in formats this module does not read; they count against the rate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from services.agent import text_calls
from services.agent.text_calls import FORMATS, Recovery, TextCall, recover_calls

CORPUS = Path(__file__).parents[2] / "data" / "local_model_answers" / "tool_calls.json"
CASES: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))
MIN_RATE = 0.94  # measured: 71/75 (docs/local-models.md); the misses are the known_miss cases


def _as_data(found: Recovery) -> dict[str, Any]:
    return {
        "format": found.format,
        "calls": [{"name": c.name, "arguments": json.loads(c.arguments), "repaired": c.repaired} for c in found.calls],
        "text": found.text,
    }


def _recovered(case: dict[str, Any]) -> bool:
    found = recover_calls(case["content"], case["offered"])
    wanted = case["expected"]
    if wanted is None:
        return found is None
    return found is not None and _as_data(found) == wanted


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    found = recover_calls(case["content"], case["offered"])
    if case["expected"] is None:  # a negative, or a format not read (known_miss): the content stays text
        assert found is None, f"{case['id']}: {case.get('why') or case.get('known_miss')}"
        return
    assert found is not None
    assert _as_data(found) == case["expected"]
    for call in found.calls:
        assert call.name in case["offered"]
        assert isinstance(json.loads(call.arguments), dict)


def test_recovery_rate(capsys: pytest.CaptureFixture[str]) -> None:
    calls = [c for c in CASES if c["expected"] is not None or "known_miss" in c]
    negatives = [c for c in CASES if c["expected"] is None and "known_miss" not in c]
    recovered = [c for c in calls if c["expected"] is not None and _recovered(c)]
    false_calls = [c["id"] for c in negatives if recover_calls(c["content"], c["offered"]) is not None]
    rate = len(recovered) / len(calls)
    with capsys.disabled():
        print(
            f"\nlocal model answers: {len(recovered)}/{len(calls)} calls recovered ({rate:.1%}), "
            f"{len(false_calls)}/{len(negatives)} negatives taken for calls"
        )
    assert not false_calls
    assert rate >= MIN_RATE


def test_the_corpus_is_sourced_and_covers_every_format() -> None:
    assert len(CASES) >= 40
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case["source"].strip() and isinstance(case["offered"], list) and isinstance(case["content"], str)
        if case["expected"] is not None:
            assert case["expected"]["format"] in FORMATS
            assert case["expected"]["calls"]
        else:
            assert case.get("why") or case.get("known_miss")
    covered = {c["expected"]["format"] for c in CASES if c["expected"] is not None}
    assert covered == set(FORMATS)
    assert any(
        "repaired" in c["id"] or any(k["repaired"] for k in c["expected"]["calls"]) for c in CASES if c["expected"]
    )


def test_content_without_a_marker_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(_: str) -> list[Any]:
        raise AssertionError("a format parser ran on content without any marker")

    monkeypatch.setattr(
        text_calls, "_FORMATS", tuple((name, markers, never) for name, markers, _ in text_calls._FORMATS)
    )
    text = "A plain answer, with commas; colons: and (parentheses) but no braces or tags.\n" * 20_000
    assert recover_calls(text, ["get_weather"]) is None  # and `never` was not called


def test_nothing_offered_nothing_recovered() -> None:
    content = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    assert recover_calls(content, []) is None
    assert recover_calls("", ["get_weather"]) is None


@pytest.mark.parametrize("offered", [["get_weather"], {"get_weather"}, frozenset({"get_weather"}), ("get_weather",)])
def test_offered_may_be_any_collection(offered: Any) -> None:
    found = recover_calls('<tool_call>{"name": "get_weather"}</tool_call>', offered)
    assert found == Recovery([TextCall("get_weather", "{}", False)], "", "hermes")


def test_arguments_are_a_json_object_string() -> None:
    found = recover_calls('<tool_call>{"name": "say", "arguments": {"text": "héllo ✓"}}</tool_call>', ["say"])
    assert found is not None
    assert found.calls[0].arguments == '{"text": "héllo ✓"}'


def test_arguments_that_are_not_an_object_are_not_a_call() -> None:
    assert recover_calls('<tool_call>{"name": "say", "arguments": [1, 2]}</tool_call>', ["say"]) is None
    assert recover_calls('<tool_call>{"name": "say", "arguments": "just words"}</tool_call>', ["say"]) is None


def test_an_unclosed_tool_code_fence_is_recovered_like_other_unclosed_blocks() -> None:
    # an answer cut at its token limit right after a complete call (issue 29): the fence never closes
    found = recover_calls('```tool_code\nget_weather(city="Paris")\n', ["get_weather"])
    assert found == Recovery([TextCall("get_weather", '{"city": "Paris"}', False)], "", "gemma_tool_code")
    assert recover_calls('```tool_code\nget_weather(city="Par', ["get_weather"]) is None  # cut inside the call


def test_a_refused_block_is_not_read_again_by_a_looser_format() -> None:
    # the <tool_calls> block names a tool not offered: its first object must not come back as bare JSON
    content = '<tool_calls>\n{"name": "ok", "arguments": {}}\n{"name": "bad", "arguments": {}}\n</tool_calls>'
    assert recover_calls(content, ["ok"]) is None


def test_inline_code_quotes_go_with_the_call() -> None:
    found = recover_calls('Use `{"name": "fs__read", "arguments": {"path": "a"}}` now', ["fs__read"])
    assert found is not None and found.text == "Use now"


def test_a_call_in_another_fence_leaves_no_empty_fence() -> None:
    content = 'Sure:\n```xml\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>\n```\nDone.'
    found = recover_calls(content, ["get_weather"])
    assert found is not None and found.text == "Sure:\n\nDone."


def test_broken_json_longer_than_the_repair_limit_stays_text() -> None:
    content = '<tool_call>{"name": "fs__write", "arguments": {"text": "' + "a" * (text_calls.REPAIR_LIMIT + 10)
    assert recover_calls(content, ["fs__write"]) is None


BAR, SPACE = "\uff5c", "\u2581"
PATHOLOGICAL = {
    "braces": "{" * 100_000,
    "brackets": "[a(" * 30_000,
    "bracket lines": "[a(\n" * 30_000,
    "deep json": '{"name": "get_weather", "arguments": ' + "[" * 50_000,
    "deep closed json": '<tool_call>{"name": "get_weather", "arguments": '
    + "[" * 5_000
    + "]" * 5_000
    + "}</tool_call>",
    "tags": "<tool_call>" * 30_000,
    "functions": "<function=a>" * 30_000,
    "objects": '{"name": "x"} ' * 20_000,
    "deepseek markers": f"<{BAR}tool{SPACE}call{SPACE}begin{BAR}>" * 20_000,
    "fences": '```python\n{"name": 1}\n```\n' * 20_000,
    "gemma": "<|tool_call>call:x{" * 20_000,
    "lone angles": "<" * 100_000,
    "deep python": "[get_weather(a=" + "[" * 5_000 + "]" * 5_000 + ")]",
}


PATHOLOGICAL_CPU_BOUND_S = 30.0  # each takes well under a second of CPU when the scan is linear


@pytest.mark.parametrize("content", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_content_is_fast(content: str) -> None:
    """A guard against catastrophic backtracking (which runs for hours on these), not a speed test: the bound is
    this process's CPU time, which other processes on a busy machine do not inflate, with a wide margin."""
    started = time.process_time()
    assert recover_calls(content, ["get_weather"]) is None
    assert time.process_time() - started < PATHOLOGICAL_CPU_BOUND_S
