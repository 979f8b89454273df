"""Telemetry: the tracer provider (from OTEL_* variables), server spans, request ids, HTTP metrics,
and JSON logs with trace/run ids and secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, TextIO
from urllib.parse import urlsplit

from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings
from services.lmstudio import LMStudioClient
from services.metrics import Metrics
from services.text import Redactor
from services.tracing import current_run_id

UNTRACED = "healthz,readyz,metrics"  # the instrumentation's excluded_urls format
UNTRACED_PATHS = frozenset(f"/{name}" for name in UNTRACED.split(","))
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, not echoed
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_NO_HEADERS: dict[str, str] = {}
_JSON = json.JSONEncoder(default=str)  # `json.dumps(..., default=str)` would build one per line
# what `logging` looks up for every record and no line of ours shows: the caller's file, line and function,
# the thread, the process (Python's logging documentation, "Optimization"); set by `configure_logging`
LEAN_RECORDS: dict[str, Any] = {
    "_srcfile": None,
    "logThreads": False,
    "logProcesses": False,
    "logMultiprocessing": False,
}
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")  # their lines go through the root's handler
QUIET_LOGGERS = ("httpx", "aiosqlite")  # a line per request / per database call below WARNING


class WhileExporting(Sampler):
    """Records spans only once something exports them. Until then spans are non-recording but
    still carry trace ids (responses and run results keep theirs), at a fraction of the cost."""

    def __init__(self) -> None:
        self.recording = False
        self._on = ParentBased(ALWAYS_ON)

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        if self.recording:
            return self._on.should_sample(*args, **kwargs)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "WhileExporting"


def export_spans(provider: TracerProvider, processor: SpanProcessor) -> None:
    """Send spans to `processor` (and start recording them)."""
    provider.add_span_processor(processor)
    if isinstance(provider.sampler, WhileExporting):
        provider.sampler.recording = True


def tracer_provider(settings: Settings) -> TracerProvider:
    """The process's SDK tracer provider, created once from the standard OTEL_* variables.

    Always an SDK provider, so every request has a trace id; exporters only when asked for:
    OTLP http/protobuf when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, console by a setting.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")  # the contrib packages' stable names
    named = bool(os.environ.get("OTEL_SERVICE_NAME"))  # else the resource would say "unknown_service"
    resource = Resource.create({} if named else {"service.name": "lmstudio-bridge"})
    provider = TracerProvider(resource=resource, sampler=WhileExporting())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        export_spans(provider, BatchSpanProcessor(OTLPSpanExporter()))
    if settings.otel_console:
        export_spans(provider, SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)
    return provider


def exporting(provider: TracerProvider) -> bool:
    return not isinstance(provider.sampler, WhileExporting) or provider.sampler.recording


def instrument(app: FastAPI, provider: TracerProvider) -> bool:
    """Server spans for every route but health, readiness and metrics, when spans are exported
    (the instrumentation costs CPU on every request even when nothing is recorded, see docs/performance.md;
    without it, `RequestContextMiddleware` opens the request's trace itself). True when instrumented."""
    if not exporting(provider):
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # ~2 MB, loaded only when exporting

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=UNTRACED, exclude_spans=["receive", "send"]
    )
    return True


def instrument_client(client: LMStudioClient, provider: TracerProvider) -> None:
    """HTTP client spans (children of the GenAI spans) on an LM Studio client, when spans are
    exported (the wrapper costs CPU on every call even when nothing is recorded; see docs/performance.md)."""
    if not exporting(provider):
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # ~3 MB, loaded only when exporting

    HTTPXClientInstrumentor.instrument_client(client.http, tracer_provider=provider)
    client.trace_requests()


class RequestContextMiddleware:
    """`X-Request-ID` honoured or generated and echoed; `X-Trace-ID` on every traced answer;
    HTTP requests counted and timed by route template. Without the server instrumentation
    (`open_trace`), it opens the request's (non-recording) trace, continuing a `traceparent`."""

    def __init__(self, app: ASGIApp, metrics: Metrics, open_trace: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.open_trace = open_trace
        # the SDK tracer itself once a provider is set (the module's proxy tracer looks it up on every span)
        self._tracer = trace.get_tracer("lmstudio_bridge.http")
        # the headers the configured propagators read: a request without any of them starts a new trace
        self._trace_headers = frozenset(name.encode("latin-1") for name in propagate.get_global_textmap().fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.open_trace and scope["path"] not in UNTRACED_PATHS:
            headers = scope["headers"]
            trace_headers = self._trace_headers
            if any(k in trace_headers for k, _ in headers):
                carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
                parent = propagate.extract(carrier)
            else:  # none of the headers a propagator reads: the same answer, without decoding every header
                parent = propagate.extract(_NO_HEADERS)
            with self._tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}", context=parent, kind=SpanKind.SERVER
            ):
                await self._handle(scope, receive, send)
            return
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER), "")
        rid = given if REQUEST_ID_SHAPE.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, rid.encode()))
                ctx = trace.get_current_span().get_span_context()
                if ctx.is_valid:
                    headers.append((b"x-trace-id", format(ctx.trace_id, "032x").encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            request_id.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or _fixed_route(scope.get("path", ""))
            method = scope["method"]
            metrics = self.metrics
            metrics.child(metrics.http_requests, template, method, str(status)).inc()
            metrics.child(metrics.http_duration, template, method).observe(time.perf_counter() - started)


# --- logs ------------------------------------------------------------------------------------


# routes that are not API routes (no `route` in the scope): their own label, every other path stays `unmatched`
# (a label per unknown path would let any client grow the metrics without bound)
FIXED_ROUTES = frozenset({"/mcp", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def _fixed_route(path: str) -> str:
    return path if path in FIXED_ROUTES else "unmatched"


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with trace_id, span_id, run_id and request_id when known."""

    def __init__(self, secrets: Iterable[str] = (), *, more: Callable[[], Sequence[str]] | None = None) -> None:
        super().__init__()
        self.redact = Redactor(secrets, more=more)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        if run := current_run_id.get():
            entry["run_id"] = run
        if rid := request_id.get():
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(_JSON.encode(entry))


def log_handler(
    secrets: Iterable[str] = (), stream: TextIO | None = None, *, more: Callable[[], Sequence[str]] | None = None
) -> logging.Handler:
    """The handler of the process's log lines: JSON lines on `stream` (stderr by default); `secrets`, and
    those `more` returns later (see `Redactor`), never appear in them."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JSONFormatter(secrets, more=more))
    return handler


def configure_logging(
    level: str, secrets: Iterable[str] = (), *, more: Callable[[], Sequence[str]] | None = None
) -> None:
    """JSON lines on stderr for the whole process (uvicorn's loggers included), from records without what the
    lines do not show (LEAN_RECORDS)."""
    for name, value in LEAN_RECORDS.items():
        setattr(logging, name, value)
    root = logging.getLogger()
    root.handlers[:] = [log_handler(secrets, more=more)]
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def secrets_of(settings: Settings, env_and_header_values: Iterable[str]) -> list[str]:
    """Every value that must never reach a log line."""
    values = [key.get_secret_value() for key in (*settings.api_keys, *settings.token_key)]
    if settings.lmstudio_api_token:
        values.append(settings.lmstudio_api_token.get_secret_value())
    if password := urlsplit(settings.database_url).password:
        values.append(password)
    return values + list(env_and_header_values)
