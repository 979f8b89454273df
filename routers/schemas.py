"""Response and request bodies shared by the routers (they shape the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """RFC 9457 problem document; `code` is stable, extra members depend on it."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:lmstudio-bridge:problem:model_not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["model_not_found"])
    instance: str | None = None


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "lmstudio"
    type: Literal["llm", "vlm", "embedding"]
    state: Literal["loaded", "not-loaded"]
    max_context_length: int | None
    tool_use: bool
    default: bool = Field(description="True for the model a request without `model` gets")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]
    aliases: dict[str, str] = Field(default_factory=dict, description="BRIDGE_MODEL_ALIASES")
    stale: bool = Field(False, description="LM Studio did not answer; this is the last list it gave")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    lmstudio: dict[str, Any]
    mcp: dict[str, Any] = Field(default_factory=dict)


PROBLEM_DESCRIPTIONS = {
    400: "The body could not be read as JSON (`http_400`)",
    401: "Missing or wrong API key (`unauthorized`)",
    404: "Unknown name in the path (`mcp_server_not_found`, `tool_not_found`, `model_not_found`)",
    413: "Request body larger than BRIDGE_MAX_BODY_BYTES (`payload_too_large`)",
    422: "Invalid request (`validation_error`, `model_not_found`, `mcp_server_not_found`, `upstream_rejected`)",
    429: "Too many runs in progress (`overloaded`) or LM Studio rate limiting; see Retry-After",
    501: "This LM Studio does not have the endpoint (`not_supported_by_lmstudio`)",
    502: "LM Studio or an MCP server answered with an error (`upstream_error`, `mcp_error`)",
    503: "LM Studio or an MCP server is unavailable or its breaker is open; see Retry-After",
    504: "LM Studio or a tool did not answer in time (`upstream_timeout`, `tool_timeout`)",
}
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring problem+json bodies for these statuses."""
    return {
        status: {
            "model": Problem,  # registers the schema (FastAPI also lists it under application/json)
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
            "description": PROBLEM_DESCRIPTIONS.get(status, "Problem"),
        }
        for status in statuses
    }


class UsageModel(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StepModel(BaseModel):
    round: int
    tool_call_id: str
    name: str = Field(description="The <server>__<tool> name the model called")
    server: str | None
    tool: str | None
    arguments: Any = Field(description="Arguments as sent to the tool (the raw string if they were not JSON)")
    output: str
    is_error: bool
    duration_ms: float


class RunResultModel(BaseModel):
    run_id: str
    status: Literal["completed", "max_rounds", "timeout", "cancelled"]
    output: str
    model: str = Field(description="The model that answered")
    mcp_servers: list[str]
    rounds: int = Field(description="Rounds that called tools")
    steps: list[StepModel]
    usage: UsageModel
    duration_ms: float
    trace_id: str | None
    warnings: list[str] = Field(default_factory=list, description="e.g. LM Studio answered with another model")
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Calls of the client's own function tools, handed back unexecuted (chat completions only)",
    )


class ServerModel(BaseModel):
    name: str
    transport: Literal["stdio", "http"]
    status: Literal["idle", "starting", "ready", "failed", "disabled"]
    tools: int | None = Field(description="Number of tools once the server has started")
    last_error: str | None
    env: list[str] = Field(description="Names of the environment variables set for it (never values)")
    headers: list[str] = Field(description="Names of the HTTP headers sent to it (never values)")
    command: str | None
    url: str | None
    breaker: Literal["closed", "open", "half_open"] = "closed"


class ServerList(BaseModel):
    data: list[ServerModel]
    config_path: str | None = Field(description="The mcp.json in use; null when none was found")


class ToolModel(BaseModel):
    name: str
    model_name: str = Field(description="The name offered to the model: <server>__<tool>")
    description: str
    input_schema: dict[str, Any]


class ToolList(BaseModel):
    server: str
    data: list[ToolModel]


class ToolCallResult(BaseModel):
    content: list[dict[str, Any]]
    structured_content: dict[str, Any] | None
    is_error: bool


RUN_EVENTS = ("run.started", "round.started", "tool_call.started", "tool_call.completed", "message")


def _json_data(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json", "description": description}
    if schema is not None:
        data["contentSchema"] = schema
    return data


def _terminal(event: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {"properties": {"event": {"const": event}}},
        "then": {"properties": {"data": _json_data(event, schema)}},
    }


# One Server-Sent Event as parsed from the stream: `event:` name and `data:` text (JSON here).
RUN_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One SSE event of a run: "
    + ", ".join(RUN_EVENTS)
    + ", then exactly one of run.completed (data = the run result) or run.failed (data = a problem document)."
    " `: keep-alive` comments may come in between.",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": [*RUN_EVENTS, "run.completed", "run.failed"]},
        "data": _json_data("The event's JSON payload"),
    },
    "allOf": [
        _terminal("run.completed", {"$ref": "#/components/schemas/RunResultModel"}),
        _terminal("run.failed", PROBLEM_SCHEMA),
    ],
}
CHUNK_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One SSE `data:` line: an OpenAI chunk (`chat.completion.chunk` for chat) as JSON, and finally "
    '`[DONE]`. With MCP servers a failed run sends `{"error": <problem document>}` before `[DONE]`.',
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
