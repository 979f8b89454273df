"""OpenTelemetry GenAI spans and token metrics of LM Studio calls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from opentelemetry.trace import Span, SpanKind

from services.lmstudio.chat import ChatResult, Usage
from services.metrics import Metrics
from services.tracing import tracer

OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


def operation_name(path: str) -> str:
    """The GenAI operation name of an OpenAI-style path."""
    return OPERATIONS.get(path, "request")


def span_host(name: str, url: httpx.URL) -> dict[str, Any]:
    """The attributes that say which LM Studio host a span's call went to."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return {"server.address": url.host, "server.port": port, "bridge.lmstudio.host": name}


@contextlib.contextmanager
def gen_ai_span(
    operation: str, model: Any, *, stream: bool = False, host: dict[str, Any] | None = None
) -> Iterator[Span]:
    """A client span following the OpenTelemetry GenAI conventions (`host`: from `span_host`)."""
    name = f"{operation} {model}" if model else operation
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": "lmstudio",
        "gen_ai.system": "lmstudio",
        **(host or {}),
    }
    if model:
        attributes["gen_ai.request.model"] = str(model)
    if stream:
        attributes["bridge.stream"] = True
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def record_chat(span: Span, result: ChatResult, metrics: Metrics) -> None:
    """`record_response` for a parsed chat answer: no second reading of the body, no attributes on a span that
    is not recorded."""
    usage = result.usage
    if span.is_recording():
        if result.model:
            span.set_attribute("gen_ai.response.model", result.model)
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if result.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
    count_tokens(metrics, result.model, usage)


def count_tokens(metrics: Metrics, model: str, usage: Usage) -> None:
    """The tokens of one answer in `bridge_tokens_total` (children bound once per model)."""
    if model and (usage.prompt_tokens or usage.completion_tokens):
        metrics.child(metrics.tokens, model, "input").inc(usage.prompt_tokens)
        metrics.child(metrics.tokens, model, "output").inc(usage.completion_tokens)


def record_response(span: Span, body: Any, metrics: Metrics) -> None:
    """Response model, usage and finish reasons on the span; tokens in the metrics."""
    if not isinstance(body, dict):
        return
    model = str(body.get("model") or "")
    usage = Usage.from_json(body.get("usage"))
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    reasons = [str(c.get("finish_reason")) for c in body.get("choices") or [] if isinstance(c, dict)]
    if model:
        span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", prompt)
    span.set_attribute("gen_ai.usage.output_tokens", completion)
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
    count_tokens(metrics, model, usage)
