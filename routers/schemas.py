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


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring problem+json bodies for these statuses."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}, "description": "Problem"}
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
    warnings: list[str] = Field(default_factory=list)


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
