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
