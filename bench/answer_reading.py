"""What reading an answer costs the loop: the reasoning split and text tool-call recovery, measured on
an answer with structured `tool_calls` (recovery must add nothing) and on a plain text answer."""

from __future__ import annotations

import json
import time
from typing import Any

from services.agent.answers import recover_text_calls
from services.lmstudio.chat import parse_chat

OFFERED = {"time__get_current_time", "time__convert_time"}
CALL = {
    "id": "c1",
    "type": "function",
    "function": {"name": "time__get_current_time", "arguments": '{"timezone": "UTC"}'},
}


def answer(content: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": {}}


def per_call_us(work: Any, n: int = 50_000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            work()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


async def run() -> dict[str, object]:
    structured = json.loads(json.dumps(answer(None, [CALL])))
    prose = json.loads(json.dumps(answer("It is 12:04 in Tokyo, according to the time server. " * 4, [])))
    parse_only = per_call_us(lambda: parse_chat(structured))
    parse_and_recover = per_call_us(lambda: recover_text_calls(parse_chat(structured), OFFERED, 1))
    prose_parse = per_call_us(lambda: parse_chat(prose))
    prose_recover = per_call_us(lambda: recover_text_calls(parse_chat(prose), OFFERED, 1))
    return {
        "title": "Reading an answer (reasoning split, text tool-call recovery)",
        "note": "Same process, same run: parsing LM Studio's answer alone vs parsing plus recovery "
        "(best of 5 x 50,000).",
        "rows": [
            ("structured tool call: parse", f"{parse_only:.2f} µs", "baseline"),
            (
                "structured tool call: parse + recovery",
                f"{parse_and_recover:.2f} µs (+{parse_and_recover - parse_only:.2f})",
                "no measurable cost",
            ),
            ("plain text answer: parse", f"{prose_parse:.2f} µs", "baseline"),
            (
                "plain text answer: parse + recovery",
                f"{prose_recover:.2f} µs (+{prose_recover - prose_parse:.2f})",
                "small",
            ),
        ],
    }
