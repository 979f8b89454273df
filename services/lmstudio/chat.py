"""Chat completion results: token usage, tool calls, and the parser of LM Studio's answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from services.errors import LLMResponseError
from services.lmstudio.reasoning import split_reasoning
from services.text import scrub


@dataclass(slots=True)
class Usage:
    """Tokens used, as OpenAI reports them; also the `usage` of a run result."""

    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)  # always sent

    prompt_tokens: Annotated[int, Field(description="Tokens of the prompts sent to the model")] = 0
    completion_tokens: Annotated[int, Field(description="Tokens the model generated")] = 0
    total_tokens: Annotated[int, Field(description="prompt_tokens + completion_tokens")] = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        if not isinstance(data, dict):
            return cls()
        prompt, completion = int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON string the model produced (may be malformed)
    recovered_from: str | None = None  # the text format the call was recovered from (see services.agent)
    repaired: bool = False  # its JSON was broken and has been repaired


@dataclass(slots=True)
class ChatResult:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    reasoning: str | None = None  # `reasoning_content`, or <think> blocks taken out of `content`
    host: str = ""  # the LM Studio host that answered (its name)
    failovers: list[str] = field(default_factory=list)  # hosts that failed this call first, and why


def parse_chat(body: dict[str, Any]) -> ChatResult:
    """The result in a `chat.completion` body; raises `LLMResponseError` when it is not one."""
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
        calls = [
            # arguments stay as written: the agent checks them and tells the model what is wrong
            ToolCall(
                scrub(str(c.get("id") or f"call_{i}")),
                scrub(str(c["function"]["name"])),
                c["function"].get("arguments") or "",
            )
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMResponseError(f"LM Studio answer is not a chat completion: missing {exc}") from exc
    for call in calls:  # some servers send arguments as an object, not a JSON string
        if not isinstance(call.arguments, str):
            call.arguments = json.dumps(call.arguments)
    content = message.get("content")
    reasoning, answer = split_reasoning(scrub(content) if isinstance(content, str) else None)
    separated = message.get("reasoning_content")
    if isinstance(separated, str) and separated:
        reasoning = scrub(separated) + ("\n\n" + reasoning if reasoning else "")
    return ChatResult(
        answer,
        calls,
        choice.get("finish_reason"),
        scrub(str(body.get("model") or "")),
        Usage.from_json(body.get("usage")),
        reasoning,
    )
