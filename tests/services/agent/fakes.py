"""Fakes for the agent's three ports (services/agent/ports.py), and the small builders the loop's tests share."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.context import ContextWindow
from services.lmstudio import ChatResult, ModelInfo, ModelKind, ResolvedModel, ToolCall, Usage
from services.mcp import ToolResult, ToolSet, ToolSpec
from services.mcp.resources import ResourceInfo


def call(name: str, arguments: Any, call_id: str | None = None) -> ToolCall:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(call_id or f"call_{name}_{abs(hash(raw)) % 10_000}", name, raw)


def answer(content: str | None = None, *calls: ToolCall, model: str = "m") -> ChatResult:
    return ChatResult(content, list(calls), "tool_calls" if calls else "stop", model, Usage(10, 5, 15))


class FakeEngine:
    """What every fake engine shares: no host is known to be down, models load on first use unannounced."""

    reports_load_state = False

    def __init__(self) -> None:
        self.unloaded: list[str] = []

    def check(self) -> None:
        return None

    async def unload_model(self, key: str, host: str | None = None) -> dict[str, Any]:
        self.unloaded.append(key)
        return {"instance_id": key}


class FakeLMStudio(FakeEngine):
    """Answers from a script; records every payload it was sent."""

    def __init__(self, *answers: ChatResult) -> None:
        super().__init__()
        self.answers = list(answers)
        self.payloads: list[dict[str, Any]] = []

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        self.payloads.append(json.loads(json.dumps(payload)))  # a snapshot: the loop appends to `messages`
        if not self.answers:
            await asyncio.Event().wait()  # a model that never answers
        return self.answers.pop(0)


class FakeCatalog:
    """One model, `m`, whose context window is `window` tokens until an engine says otherwise."""

    def __init__(self, window: int = 4096) -> None:
        self.windows = {"m": ContextWindow(window, "default")}
        self.aliases: dict[str, str] = {}

    def invalidate(self) -> None:
        return None

    async def resolve(self, requested: str | None, *, kind: ModelKind = "chat") -> ResolvedModel:
        return ResolvedModel("m", ModelInfo("m", "llm", loaded=True), stale=False)

    def window_of(self, model_id: str) -> ContextWindow:
        return self.windows[model_id]

    def learn_window(self, model_id: str, tokens: int) -> ContextWindow:
        self.windows[model_id] = ContextWindow(tokens, "learned")
        return self.windows[model_id]


class FakePool:
    """Tools of fake servers; `results` maps a tool name to a ToolResult or an exception."""

    def __init__(self, *tools: ToolSpec, results: dict[str, ToolResult | Exception] | None = None) -> None:
        self.tools = list(tools)
        self.results: dict[str, ToolResult | Exception] = results or {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    def names(self) -> list[str]:
        return sorted({t.server for t in self.tools})

    async def list_tools(self, name: str) -> list[ToolSpec]:
        return [t for t in self.tools if t.server == name]

    async def tool_set(self, servers: list[str]) -> ToolSet:
        return ToolSet([t for t in self.tools if t.server in servers])

    async def list_resources(self, server: str) -> list[ResourceInfo]:
        return []

    async def read_resource(self, server: str, uri: str) -> str:
        return ""

    async def call_tool(self, server: str, tool: str, arguments: dict[str, Any], **_: Any) -> ToolResult:
        self.calls.append((server, tool, arguments))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self.results.get(tool, text_result(f"{tool} ok"))
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.in_flight -= 1


def text_result(text: str, is_error: bool = False) -> ToolResult:
    return ToolResult(content=[{"type": "text", "text": text}], text=text, structured_content=None, is_error=is_error)
