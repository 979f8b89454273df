"""Response and request bodies shared by the routers (they shape the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.agent import PROGRESS_EVENTS, RunEvent
from services.mcp import ToolSpec


class OpenAIError(BaseModel):
    """OpenAI's error object: `message` is the problem's `detail`, `code` its stable code."""

    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = Field(default=None, examples=["model"])
    code: str = Field(examples=["model_not_found"])


class Problem(BaseModel):
    """RFC 9457 problem document; `code` is stable, extra members depend on it."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:lmstudio-bridge:problem:model_not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["model_not_found"])
    instance: str | None = None
    error: OpenAIError | None = Field(
        default=None, description="On the OpenAI-compatible routes only: the same failure in OpenAI's shape"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


PROBLEM_DESCRIPTIONS = {
    400: "The body is not valid JSON or is nested too deeply (`invalid_json`)",
    401: "Missing or wrong API key (`unauthorized`)",
    404: "Unknown name in the path (`mcp_server_not_found`, `tool_not_found`, `model_not_found`)",
    413: "Request body larger than BRIDGE_MAX_BODY_BYTES (`payload_too_large`)",
    422: "Invalid request (`validation_error`, `model_not_found`, `no_model_loaded`, `mcp_server_not_found`, "
    "`upstream_rejected`)",
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


class ToolList(BaseModel):
    server: str
    data: list[ToolSpec]


# only a stored (background) run can wait for a person: a synchronous run denies such calls at once
_APPROVAL_EVENTS = (RunEvent.APPROVAL_REQUESTED, RunEvent.APPROVAL_DECIDED)
_STEP_EVENTS = (RunEvent.STEP_STARTED, RunEvent.STEP_COMPLETED)  # pipelines only


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


def _run_event_schema(stored: bool, pipeline: bool = False) -> dict[str, Any]:
    """One Server-Sent Event as parsed from the stream: `event:` name, `data:` text (JSON here) and,
    for a stored run's events, `id:` (the sequence number)."""
    left_out = () if stored else _APPROVAL_EVENTS + (() if pipeline else _STEP_EVENTS)
    progress = [str(e) for e in PROGRESS_EVENTS if e not in left_out]
    properties: dict[str, Any] = {
        "event": {"type": "string", "enum": [*progress, RunEvent.COMPLETED, RunEvent.FAILED]},
        "data": _json_data("The event's JSON payload"),
    }
    if stored:
        properties["id"] = {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The event's sequence number (1, 2, ...); send it as Last-Event-ID to resume after it",
        }
    return {
        "type": "object",
        "description": "One SSE event of a run: "
        + ", ".join(progress)
        + ", then exactly one of run.completed (data = the run result) or run.failed (data = a problem document)."
        " `: keep-alive` comments may come in between.",
        "required": ["event", "data", *(["id"] if stored else [])],
        "properties": properties,
        "allOf": [
            _terminal(RunEvent.COMPLETED, {"$ref": "#/components/schemas/RunResult"}),
            _terminal(RunEvent.FAILED, PROBLEM_SCHEMA),
        ],
    }


RUN_EVENT_SCHEMA = _run_event_schema(stored=False)
PIPELINE_EVENT_SCHEMA = _run_event_schema(stored=False, pipeline=True)
STORED_EVENT_SCHEMA = _run_event_schema(stored=True)
CHUNK_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One SSE `data:` line: an OpenAI chunk (`chat.completion.chunk` for chat) as JSON, and finally "
    '`[DONE]`. With MCP servers a failed run sends `{"error": <problem document>}` before `[DONE]`.',
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
