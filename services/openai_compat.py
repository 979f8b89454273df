"""OpenAI-compatible endpoints: a validated pass-through to LM Studio, or, when a chat request
names MCP servers, the agent loop run server-side and answered as an ordinary chat completion."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from services.access import Access
from services.agent import AgentService, Run, RunResult, resolve_model, result_data, run_spec
from services.agent.options import (
    AllowedTools,
    MaxRounds,
    MaxTokens,
    MCPServers,
    Model,
    SystemPrompt,
    TimeoutS,
    ToolChoiceOption,
    validated,
)
from services.errors import InvalidJSONError, InvalidRequestError
from services.lmstudio import LMStudioHosts, ModelCatalog, ModelKind
from services.lmstudio.answer import Answer


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str


class ChatOptions(BaseModel):
    """The fields of a chat request the gateway reads itself (the rest goes to LM Studio as is); the run
    options among them are services.agent.options' (same types and bounds as /v1/autonomous)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    messages: list[ChatMessage] = Field(min_length=1)
    model: Model = None
    stream: bool | None = None
    mcp_servers: MCPServers = None
    max_rounds: MaxRounds = None
    max_tokens: MaxTokens = None
    allowed_tools: AllowedTools = None
    timeout_s: TimeoutS = None
    system_prompt: SystemPrompt = None
    tool_choice: ToolChoiceOption = None
    store: bool | None = Field(None, description="false: the run with MCP servers is not recorded in the run store")


BRIDGE_FIELDS = ("mcp_servers", "max_rounds", "allowed_tools", "timeout_s", "system_prompt")
NOT_FOR_LMSTUDIO = frozenset(
    {*BRIDGE_FIELDS, "model", "messages", "tools", "stream", "stream_options", "tool_choice", "max_tokens", "store"}
)


class _ChatFields(ChatOptions):
    """ChatOptions with the messages taken as they are: they go on as the client sent them, so each needs only a
    role (checked by hand in `chat_options`), not a model object."""

    messages: Any = None


def _well_formed(messages: Any) -> bool:
    """What ChatOptions asks of `messages` (a non-empty list of objects with a string role), without pydantic."""
    if type(messages) is not list or not messages:
        return False
    return all(type(message) is dict and type(message.get("role")) is str for message in messages)


def chat_options(body: dict[str, Any]) -> ChatOptions:
    """The gateway's fields of a chat body, checked like /v1/autonomous's (422 naming the field). The messages are
    checked by hand, not validated into models one by one (0.6 ms for 200 of them); badly formed ones get
    ChatOptions' own answer."""
    if not _well_formed(body.get("messages")):
        return validated(ChatOptions, body)  # raises, naming every bad field
    return validated(_ChatFields, body)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise InvalidJSONError(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJSONError(InvalidJSONError.UNPARSABLE) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object")
    return body


def mcp_servers_of(body: dict[str, Any]) -> list[str]:
    """Servers a chat request names: `mcp_servers: [...]` or `{"type": "mcp", "server_label": ...}` tools."""
    named = body.get("mcp_servers") or []
    if not isinstance(named, list) or not all(isinstance(n, str) for n in named):
        raise InvalidRequestError("mcp_servers must be a list of server names")
    servers = list(named)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            label = tool.get("server_label")
            if not isinstance(label, str) or not label:
                raise InvalidRequestError('An {"type": "mcp"} tool needs a "server_label" naming an MCP server')
            servers.append(label)
    return list(dict.fromkeys(servers))


class OpenAICompat:
    """The service behind /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses."""

    def __init__(self, lmstudio: LMStudioHosts, catalog: ModelCatalog, agent: AgentService) -> None:
        self.lmstudio = lmstudio
        self.catalog = catalog
        self.agent = agent

    async def _validated(
        self, raw: bytes, body: dict[str, Any], kind: ModelKind, access: Access | None
    ) -> tuple[bytes, str]:
        """Resolve `model` (aliases, default) within the key's scope; the body is re-encoded only if the id changed."""
        requested = body.get("model")
        if requested is not None and not isinstance(requested, str):
            raise InvalidRequestError("model must be a string")
        resolved = await resolve_model(self.catalog, requested, access, kind=kind)
        if resolved.id == requested:
            return raw, resolved.id
        return json.dumps({**body, "model": resolved.id}).encode(), resolved.id

    async def forward(
        self, path: str, raw: bytes, body: dict[str, Any], access: Access | None, *, kind: ModelKind = "chat"
    ) -> Answer:
        content, model = await self._validated(raw, body, kind, access)
        return await self.lmstudio.forward(path, content, model=model)

    async def open_stream(self, path: str, raw: bytes, body: dict[str, Any], access: Access | None) -> httpx.Response:
        content, model = await self._validated(raw, body, "chat", access)
        return await self.lmstudio.open_stream(path, content, model=model)

    async def open_run(
        self, body: dict[str, Any], options: ChatOptions, servers: list[str], access: Access | None
    ) -> Run:
        """The agent run a chat request with MCP servers stands for (`options`: from `chat_options(body)`)."""
        messages = body["messages"]
        client_tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
        spec = run_spec(
            options,
            task=_last_user_text(messages),
            mcp_servers=servers,
            messages=messages,
            client_tools=client_tools,
            extra_body={k: v for k, v in body.items() if k not in NOT_FOR_LMSTUDIO},
            store=options.store is not False,
            access=access,
        )
        return await self.agent.open(spec)

    async def load_model(self, model: str, ttl: int | None, host: str | None = None) -> dict[str, Any]:
        """Load a model (on `host`, else the best host that has it); the answer names the new instance in
        `instance_id` (whichever name LM Studio used) and the host."""
        if host is not None:
            self.lmstudio.host(host)  # an unknown host: 422 before anything else
        resolved = await self.catalog.resolve(model, kind="any")
        try:
            return await self.lmstudio.load_model(resolved.id, ttl, host)
        finally:
            self.catalog.invalidate()

    async def unload_model(self, model: str, host: str | None = None) -> dict[str, Any]:
        """Unload every instance of a model (on `host`, else on every host), by the instance ids LM Studio
        lists (`<key>:2` and the like)."""
        if host is not None:
            self.lmstudio.host(host)
        resolved = await self.catalog.resolve(model, kind="any")
        try:
            return await self.lmstudio.unload_model(resolved.id, host)
        finally:
            self.catalog.invalidate()


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def completion_of(result: RunResult) -> dict[str, Any]:
    """A run as an OpenAI `chat.completion`; the run record travels in `bridge_run`."""
    message: dict[str, Any] = {"role": "assistant", "content": result.output or None}
    reasoning = reasoning_of(result)
    if reasoning:
        message["reasoning_content"] = reasoning  # as LM Studio sends it with reasoning separation on
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return {
        "id": f"chatcmpl-{result.run_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(result)}],
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        },
        "bridge_run": result_data(result),
    }


def chunks_of(result: RunResult, include_usage: bool) -> list[dict[str, Any]]:
    """The same answer as `chat.completion.chunk`s (role, content, tool calls, finish, usage)."""
    full = completion_of(result)
    head = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"], "model": full["model"]}
    delta: dict[str, Any] = {"content": result.output} if result.output else {}
    reasoning = reasoning_of(result)
    if reasoning:
        delta = {"reasoning_content": reasoning, **delta}
    if result.tool_calls:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(result.tool_calls)]
    out = [
        {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]},
        {
            **head,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish(result)}],
            "bridge_run": full["bridge_run"],
        },
    ]
    if include_usage:
        out.append({**head, "choices": [], "usage": full["usage"]})
    return out


def role_chunk(run: Run, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{run.run_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": run.model.id,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    }


def reasoning_of(result: RunResult) -> str:
    """The run's reasoning as one text (rounds in order)."""
    return "\n\n".join(r.content for r in result.reasoning)


def _finish(result: RunResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    if result.status == "length" or (result.status in ("max_rounds", "timeout") and not result.output):
        return "length"
    return "stop"
