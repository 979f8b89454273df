"""The answers an engine gives to a prompt over its context window, recognised as one `ContextExceededError`.

LM Studio says it in several words (`n_keep ... >= n_ctx`, with status 400, or 200 in 0.4.21; "Cannot truncate
prompt with n_keep"; "Trying to keep the first N tokens"; MLX's "Context size has been exceeded"), llama.cpp
in its own (`exceed_context_size_error`, with `n_prompt_tokens` and `n_ctx`), OpenAI-style servers with
`code: "context_length_exceeded"`; LM Studio's GGUF path may answer an EMPTY 200 (lmstudio-bug-tracker#2339).
The recorded bodies, with their sources, are in tests/data/context_overflow.json.
"""

from __future__ import annotations

import re
from typing import Any

from services.errors import ContextExceededError

# (kind, pattern); named groups `n_prompt` and `n_ctx` are read when present
_WORDINGS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("n_keep", re.compile(r"n_keep\W*(?P<n_prompt>\d+)\W*>=?\W*n_ctx\W*(?P<n_ctx>\d+)")),
    ("n_keep", re.compile(r"number of tokens to keep from the initial prompt is greater than the context length")),
    (
        "n_keep",
        re.compile(r"keep the first (?P<n_prompt>\d+) tokens.*?context length of only (?P<n_ctx>\d+) tokens", re.S),
    ),
    ("n_keep", re.compile(r"Cannot truncate prompt with n_keep")),
    ("mlx", re.compile(r"Context size has been exceeded")),
    (
        "llama",
        re.compile(
            r"request \((?P<n_prompt>\d+) tokens\) exceeds the available context size \((?P<n_ctx>\d+) tokens\)"
        ),
    ),
    ("llama", re.compile(r"exceeds the available context size")),
    (
        "openai",
        re.compile(
            r"maximum context length is (?P<n_ctx>\d+) tokens\. However, your messages resulted in (?P<n_prompt>\d+)"
        ),
    ),
)
_CODES = {"exceed_context_size_error": "llama", "context_length_exceeded": "openai"}


def overflow_error(status: int, body: Any, message: str) -> ContextExceededError | None:
    """The overflow an error answer (any status, `message` its text) stands for, or None."""
    err = body.get("error") if isinstance(body, dict) else None
    fields = err if isinstance(err, dict) else {}
    kind = next((_CODES[str(fields[k])] for k in ("type", "code") if str(fields.get(k)) in _CODES), None)
    numbers: dict[str, int] = {}
    for name, pattern in _WORDINGS:
        found = pattern.search(message)
        if found is not None:
            kind = kind or name
            numbers = {k: int(v) for k, v in found.groupdict().items() if v is not None}
            break
    if kind is None:
        return None
    n_ctx = _count(fields.get("n_ctx")) or numbers.get("n_ctx")
    n_prompt = _count(fields.get("n_prompt_tokens")) or numbers.get("n_prompt")
    return ContextExceededError(
        f"The prompt does not fit the model's context window{_numbers(n_prompt, n_ctx)}; the engine "
        f"answered {status}: {message[:300]}",
        shape=f"{kind}_{status}",
        n_ctx=n_ctx,
        n_prompt=n_prompt,
    )


def empty_answer(body: Any) -> ContextExceededError | None:
    """An overflow when a chat completion says nothing at all: no choices, or one with no content, no tool calls,
    no reasoning and 0 completion tokens (LM Studio's GGUF path, lmstudio-bug-tracker#2339: "indistinguishable
    from the model choosing to say nothing"); else None."""
    if not isinstance(body, dict) or "error" in body:
        return None
    usage = _object(body, "usage")
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = _object(choice, "message")
        said = any(message.get(k) for k in ("content", "tool_calls", "reasoning_content", "function_call"))
        if said or _count(usage.get("completion_tokens")):
            return None
    elif choices != [] and (choices is not None or body.get("object") != "chat.completion"):
        return None  # `choices` of another type, or not a chat completion at all
    n_prompt = _count(usage.get("prompt_tokens"))
    return ContextExceededError(
        "The engine answered nothing (no text, no tool call, 0 tokens generated): LM Studio's sign of a prompt "
        f"over the model's context window{_numbers(n_prompt, None)}",
        shape="empty_200",
        n_prompt=n_prompt,
    )


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _numbers(n_prompt: int | None, n_ctx: int | None) -> str:
    parts = [f"{n_prompt} prompt tokens" if n_prompt else "", f"a {n_ctx}-token window" if n_ctx else ""]
    said = " in ".join(p for p in parts if p)
    return f" ({said})" if said else ""
