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
