"""Tracing helpers shared by the services (OpenTelemetry API only; the SDK is set up by app/)."""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry import trace

tracer = trace.get_tracer("lmstudio_bridge")
current_run_id: ContextVar[str | None] = ContextVar("current_run_id", default=None)
CONTENT_LIMIT = 4096  # characters of prompt or tool content kept on a span when capture is on


def trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a recording trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def clip(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "..."
