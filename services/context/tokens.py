"""How many tokens a chat request's prompt takes, estimated before it is sent (no tokenizer, no request): the
UTF-8 size of its text at `CHARS_PER_TOKEN`, plus what the chat template adds per message and for the tools,
then scaled per model by what the engine counted for earlier requests (`usage.prompt_tokens`).

Before any answer the estimate errs high (3.2 characters a token where English and code run about 4), so a
first request is not sent over the window; each answer's exact count then moves the model's ratio: up at once
when the estimate was low, down slowly when it was high. The cost is a walk over the messages and one
`json.dumps` of the tools (docs/context.md has the measured figures).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 3.2  # before calibration: high for English and code (~4), about right for dense JSON
# the chat template's own tokens (measured on llama.cpp with the Qwen2.5 template, rounded up: tests/real_engine)
MESSAGE_TOKENS = 6  # around each message (`<|im_start|>role\n` ... `<|im_end|>\n`)
TOOL_RESULT_TOKENS = 8  # more around a tool's output (`<tool_response>\n` ... `\n</tool_response>`)
TOOL_CALL_TOKENS = 20  # around each tool call (`<tool_call>\n{"name": "", "arguments": }\n</tool_call>`)
NO_SYSTEM_TOKENS = 24  # a template's own system prompt when the request has none (Qwen's "You are Qwen, ...")
REPLY_TOKENS = 3  # the assistant turn the template opens for the answer
TOOLS_TOKENS = 16  # the words around the tool list (`# Tools ... <tools></tools>`)
IMAGE_TOKENS = 768  # an image part: vision models take hundreds to a few thousand tokens for one
RATIO_MIN, RATIO_MAX = 0.5, 2.0  # a calibration ratio stays within these (a wild count moves it only so far)
EASE_DOWN = 0.5  # how far a ratio moves towards a lower observed one (a higher one is taken at once)
MIN_SAMPLE_TOKENS = 32  # smaller prompts are mostly template overhead: they do not calibrate
TOOL_LISTS_KEPT = 64  # tool lists whose size is remembered (a run offers the same list every round)


class TokenCounter:
    """Estimates prompt tokens of chat requests, calibrated per model by the engine's own counts.

    `estimate(model, messages, tools)` before a request; `observe(model, estimated, usage.prompt_tokens)`
    after its answer. Safe to share between runs (one lock around the ratios).
    """

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token
        self._ratios: dict[str, float] = {}
        self._lock = threading.Lock()
        # the tools' ids in order -> (the tools, their JSON's characters): held, so no id is another object's meanwhile
        self._tool_sizes: dict[tuple[int, ...], tuple[tuple[Mapping[str, Any], ...], int]] = {}

    def estimate(
        self, model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> int:
        """The prompt tokens of a chat request (`messages` and the offered `tools` as sent), calibrated for
        `model`."""
        return math.ceil(self.count(messages, tools) * self.ratio(model))

    def count(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """The uncalibrated estimate: what any model would take (errs high)."""
        chars = 0
        tokens = REPLY_TOKENS + MESSAGE_TOKENS * len(messages)
        if not any(message.get("role") == "system" for message in messages):
            tokens += NO_SYSTEM_TOKENS
        for message in messages:
            if message.get("role") == "tool":
                tokens += TOOL_RESULT_TOKENS
            content = message.get("content")
            if isinstance(content, str):
                chars += _size(content)
            elif isinstance(content, list):
                part_chars, part_tokens = _parts(content)
                chars, tokens = chars + part_chars, tokens + part_tokens
            calls = message.get("tool_calls")
            if calls:
                tokens += TOOL_CALL_TOKENS * len(calls)
                chars += sum(_call_size(call) for call in calls if isinstance(call, Mapping))
            for key in ("name", "tool_call_id", "reasoning_content"):
                value = message.get(key)
                if isinstance(value, str):
                    chars += _size(value)
        if tools:
            tokens += TOOLS_TOKENS
            chars += self._tools_size(tools)
        return tokens + math.ceil(chars / self.chars_per_token)

    def text_tokens(self, model: str, text: str) -> int:
        """The tokens `text` adds as a message's content (the message's own overhead counted apart), calibrated."""
        return math.ceil(_size(text) / self.chars_per_token * self.ratio(model))

    def _tools_size(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """The characters of the tools' JSON (its `json.dumps` is most of the cost), remembered for the same tool
        objects in the same order, whatever list holds them: each run builds a new list of its servers' tools,
        whose entries (ToolSet.openai_tools) are shared and never changed. The entries are kept with the size,
        so their ids cannot be taken by other objects meanwhile."""
        key = tuple(map(id, tools))
        known = self._tool_sizes.get(key)
        if known is not None:
            return known[1]
        size = _size(json.dumps(tools))
        if len(self._tool_sizes) >= TOOL_LISTS_KEPT:
            self._tool_sizes.pop(next(iter(self._tool_sizes)), None)  # the oldest
        self._tool_sizes[key] = (tuple(tools), size)
        return size

    def ratio(self, model: str) -> float:
        """The model's calibration: engine tokens per estimated token (1.0 until an answer tells)."""
        return self._ratios.get(model, 1.0)

    def observe(self, model: str, estimated: int, prompt_tokens: int) -> float:
        """Learn from an answer: `estimated` is what `estimate` said for its request, `prompt_tokens` what the
        engine counted (`usage.prompt_tokens`). Returns the model's ratio from now on."""
        with self._lock:
            current = self._ratios.get(model, 1.0)
            if estimated <= 0 or prompt_tokens < MIN_SAMPLE_TOKENS:
                return current
            seen = current * prompt_tokens / estimated  # what the ratio would have had to be
            updated = seen if seen > current else current + EASE_DOWN * (seen - current)
            self._ratios[model] = min(RATIO_MAX, max(RATIO_MIN, updated))
            return self._ratios[model]

    def ratios(self) -> dict[str, float]:
        """Every calibrated model's ratio (for metrics and the benchmarks)."""
        return dict(self._ratios)


def _size(text: str) -> int:
    """What a text weighs: its UTF-8 bytes (a CJK character, 3 bytes, is about one token)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _parts(parts: list[Any]) -> tuple[int, int]:
    """The characters and the (image) tokens of OpenAI content parts."""
    chars = tokens = 0
    for part in parts:
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            chars += _size(part["text"])
        elif isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image", "image"):
            tokens += IMAGE_TOKENS
    return chars, tokens


def _call_size(call: Mapping[str, Any]) -> int:
    function = call.get("function")
    if not isinstance(function, Mapping):
        return 0
    return sum(_size(v) if isinstance(v, str) else _size(json.dumps(v)) for v in _values(function, "name", "arguments"))


def _values(mapping: Mapping[str, Any], *keys: str) -> Iterable[Any]:
    return (mapping[key] for key in keys if mapping.get(key) is not None)
