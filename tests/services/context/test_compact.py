"""`compact`: older tool outputs stubbed first, then whole older rounds dropped; the count says how many
messages changed, each once."""

from __future__ import annotations

from typing import Any

from services.context.fit import compact


def history(rounds: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    for n in range(rounds):
        messages.append({"role": "assistant", "content": None, "tool_calls": [{"id": f"c{n}"}]})
        messages.append({"role": "tool", "tool_call_id": f"c{n}", "content": "x" * 100})
    return messages


def stub(message: dict[str, Any]) -> str:
    return "[cut]"


def test_stubs_are_enough_when_they_fit() -> None:
    messages = history(3)
    out, changed = compact(messages, 2, 6, lambda m: sum(len(str(x.get("content"))) for x in m) < 150, stub)
    assert changed == 2  # the two older rounds' tool outputs, the last round untouched
    assert [m["content"] for m in out if m["role"] == "tool"] == ["[cut]", "[cut]", "x" * 100]
    assert messages[3]["content"] == "x" * 100  # the caller's list is not changed


def test_a_message_stubbed_then_dropped_counts_once() -> None:
    out, changed = compact(history(3), 2, 6, lambda m: len(m) <= 4, stub)
    assert len(out) == 4  # system, task, the last round
    assert out[2]["tool_calls"] == [{"id": "c2"}]
    assert changed == 4  # two rounds of two messages dropped; the two stubbed before are among them


def test_the_fewest_outputs_are_stubbed_with_a_few_estimates() -> None:
    """40 older rounds: the oldest 25 outputs stubbed, as one at a time would have found, in ~log2(40) checks."""
    messages = history(41)
    checks = 0

    def fits(candidate: list[dict[str, Any]]) -> bool:
        nonlocal checks
        checks += 1
        return sum(1 for m in candidate if m["content"] == "x" * 100) <= 16

    out, changed = compact(messages, 2, 82, fits, stub)
    assert changed == 25
    assert [m["content"] == "[cut]" for m in out if m["role"] == "tool"] == [True] * 25 + [False] * 16
    assert checks <= 8  # one per message would be 26


def test_rounds_are_dropped_oldest_first_when_stubs_are_not_enough() -> None:
    messages = history(41)
    out, changed = compact(messages, 2, 82, lambda m: len(m) <= 12, stub)
    assert len(out) == 12  # system, task, the 4 newest older rounds and the last one
    assert [m["tool_calls"][0]["id"] for m in out if m["role"] == "assistant"] == ["c36", "c37", "c38", "c39", "c40"]
    assert changed == 40 + 36  # every older output stubbed (40), and the 36 assistant messages of the dropped rounds
    assert all(m["content"] == "[cut]" for m in out[2:10] if m["role"] == "tool")


def test_a_stub_is_asked_only_for_messages_it_may_replace() -> None:
    asked: list[str] = []

    def recording_stub(message: dict[str, Any]) -> str:
        asked.append(message["tool_call_id"])
        return "[cut]"

    compact(history(5), 2, 10, lambda m: True, recording_stub)
    assert asked == []  # it fits as it is
    compact(history(5), 2, 10, lambda m: sum(m_["content"] == "[cut]" for m_ in m) >= 1, recording_stub)
    assert set(asked) <= {"c0", "c1", "c2", "c3"} and "c0" in asked
