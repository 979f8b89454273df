"""OpenAI-compatible endpoints: pass-through to LM Studio, or MCP tools run server-side."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.deps import compat_of
from app.errors import openai_error
from app.security import access_of
from routers.route import Route
from routers.schemas import CHUNK_EVENT_SCHEMA, problem_responses
from routers.streaming import CLIENT_CLOSED_REQUEST, ProxyStream, RunFrames, RunStream, execute_for_client
from services.agent import Run, RunResult
from services.lmstudio.reasoning_relay import separate_reasoning, separate_reasoning_stream
from services.openai_compat import (
    ChatOptions,
    chat_options,
    chunks_of,
    completion_of,
    mcp_servers_of,
    parse_body,
    role_chunk,
)

router = APIRouter(prefix="/v1", tags=["openai"], route_class=Route)


def _body_schema(description: str, example: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {
                    "schema": schema or {"type": "object", "additionalProperties": True},
                    "example": example,
                }
            },
        }
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` inlined (the operation's body cannot refer to them)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return dict(walk(schema))


CHAT_DOC = _body_schema(
    "An OpenAI chat completion request (every other OpenAI field goes to LM Studio as is). Add "
    '`mcp_servers: [...]` (or `tools` entries `{"type": "mcp", "server_label": "<name>"}`) to run MCP tools '
    "server-side; the answer then carries the run record in `bridge_run`. The bridge fields `max_rounds`, "
    "`allowed_tools`, `timeout_s`, `system_prompt` and `tool_choice` (first round only) apply to such runs.",
    {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "What time is it?"}], "mcp_servers": ["time"]},
    {**_inlined(ChatOptions.model_json_schema()), "additionalProperties": True},
)
PASS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "LM Studio's answer (JSON, or SSE when `stream` is true)",
        "content": {"text/event-stream": {"schema": CHUNK_EVENT_SCHEMA}},
    },
    **problem_responses(400, 401, 403, 413, 422, 429, 501, 502, 503, 504),
}


def _data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, default=str)}\n\n".encode()


class ChatFrames(RunFrames):
    """A run written as `chat.completion.chunk`s, ending with `data: [DONE]`."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.run: Run | None = None

    def opening(self, run: Run) -> bytes:
        self.run = run
        return _data(role_chunk(run, int(time.time())))

    def event(self, event: str, data: dict[str, Any], stored: Callable[[dict[str, Any]], str | None]) -> bytes | None:
        return None

    def completed(self, result: RunResult) -> bytes:
        if self.run is not None and self.run.exceeded is not None:  # a chat answer cannot say it: an error
            return self.failed(self.run.exceeded.problem())
        return b"".join(_data(c) for c in chunks_of(result, self.include_usage)) + b"data: [DONE]\n\n"

    def failed(self, problem: dict[str, Any]) -> bytes:
        return stream_error(problem)


def stream_error(problem: dict[str, Any]) -> bytes:
    """A stream's end on failure: the same body as an error response (the problem document with OpenAI's `error`
    object in it), then `[DONE]`."""
    return _data({**problem, "error": openai_error(problem)}) + b"data: [DONE]\n\n"


def _relay(upstream: Any, content: bytes | None = None) -> Response:
    body = upstream.content if content is None else content
    return Response(body, upstream.status_code, media_type=upstream.headers.get("content-type"))


async def _pass_through(request: Request, path: str) -> Response:
    """LM Studio's answer to the same body: relayed as JSON, or streamed when `stream` is true."""
    compat = compat_of(request)
    raw = await request.body()
    body = parse_body(raw)
    access = access_of(request.scope)
    if body.get("stream"):
        return ProxyStream(await compat.open_stream(path, raw, body, access), on_break=stream_error)
    return _relay(await compat.forward(path, raw, body, access))


@router.post(
    "/chat/completions",
    operation_id="createChatCompletion",
    summary="Chat completion (OpenAI)",
    responses=PASS_RESPONSES,
    openapi_extra=CHAT_DOC,
)
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completion: passed to LM Studio, or run with MCP tools when the body names servers."""
    compat = compat_of(request)
    raw = await request.body()
    body = parse_body(raw)
    options = chat_options(body)
    servers = mcp_servers_of(body)
    access = access_of(request.scope)
    if servers:
        run = await compat.open_run(body, options, servers, access)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return RunStream(run, ChatFrames(include_usage))
        result = await execute_for_client(request, run)
        if result is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if run.exceeded is not None:  # the run's context_exceeded is a problem in a chat answer
            raise run.exceeded
        return JSONResponse(completion_of(result))
    if body.get("stream"):
        upstream = await compat.open_stream("/v1/chat/completions", raw, body, access)
        return ProxyStream(upstream, separate_reasoning_stream(upstream.aiter_bytes()), on_break=stream_error)
    answer = await compat.forward("/v1/chat/completions", raw, body, access)
    return Response(
        separate_reasoning(answer.content), answer.status_code, media_type=answer.headers.get("content-type")
    )


@router.post(
    "/completions",
    operation_id="createCompletion",
    summary="Text completion (OpenAI)",
    responses=PASS_RESPONSES,
    openapi_extra=_body_schema("An OpenAI text completion request", {"model": "qwen/qwen3-4b", "prompt": "Once"}),
)
async def completions(request: Request) -> Response:
    """OpenAI text completion, passed to LM Studio."""
    return await _pass_through(request, "/v1/completions")


@router.post(
    "/embeddings",
    operation_id="createEmbedding",
    summary="Embeddings (OpenAI)",
    responses=PASS_RESPONSES,
    openapi_extra=_body_schema(
        "An OpenAI embeddings request (embedding models only)",
        {"model": "text-embedding-nomic-embed-text-v1.5", "input": "hello"},
    ),
)
async def embeddings(request: Request) -> Response:
    """OpenAI embeddings, passed to LM Studio; only embedding models are accepted."""
    raw = await request.body()
    return _relay(
        await compat_of(request).forward(
            "/v1/embeddings", raw, parse_body(raw), access_of(request.scope), kind="embedding"
        )
    )


@router.post(
    "/responses",
    operation_id="createResponse",
    summary="Responses API (OpenAI)",
    responses=PASS_RESPONSES,
    openapi_extra=_body_schema("An OpenAI Responses API request", {"model": "qwen/qwen3-4b", "input": "Hi"}),
)
async def responses(request: Request) -> Response:
    """OpenAI Responses API, passed to LM Studio where it has it (else 501)."""
    return await _pass_through(request, "/v1/responses")
