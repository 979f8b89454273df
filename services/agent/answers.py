"""What the loop makes of a model's answer before acting on it: tool calls written as text become
tool calls (never guessed: only offered tools, only known formats)."""

from __future__ import annotations

from collections.abc import Collection

from services.agent.text_calls import recover_calls
from services.lmstudio import ChatResult, ToolCall


def recover_text_calls(answer: ChatResult, offered: Collection[str], round_no: int) -> str | None:
    """Turn calls the model wrote in its text into tool calls; the format's name, or None."""
    if answer.tool_calls or not answer.content:
        return None
    found = recover_calls(answer.content, offered)
    if found is None:
        return None
    answer.tool_calls = [
        ToolCall(f"call_text_{round_no}_{i}", call.name, call.arguments, found.format, call.repaired)
        for i, call in enumerate(found.calls)
    ]
    answer.content = found.text or None
    return found.format
