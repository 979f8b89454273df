"""Traces, metrics and logs: span tree, scrape, request/trace ids, redaction, OTLP export."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.settings import Settings
from app.telemetry import JSONFormatter, configure_logging, tracer_provider
from services.text import Redactor
from tests.conftest import app_client, make_settings, spans_exported
from tests.helpers import call, eventually, script, write_mcp_json
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, log_file, log_tail, spawn_python, terminate, wait_healthy

pytestmark = pytest.mark.timeout(120)
SLOW_PAIR = "Do it " + script(calls=[[call("fault__slow", {"seconds": 0.3})] * 2])
KEY, TOKEN, ENV_SECRET = "key-SECRET-1111", "token-SECRET-2222", "env-SECRET-3333"


def echo(text: str) -> str:
    """A task whose model calls the fault server's echo once."""
    return "Do it " + script(calls=[[call("fault__echo", {"text": text})]])


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans exported to memory while this module runs (and off again after it: the rest of the suite runs
    the production default, spans not exported)."""
    memory = InMemorySpanExporter()
    with spans_exported(SimpleSpanProcessor(memory)):
        yield memory


@pytest.fixture(scope="module")
def mcp_extra() -> dict[str, dict[str, Any]]:
    return {"fault": {"env": {"FAULT_SECRET": ENV_SECRET}}}


@pytest.fixture(scope="module")
def gateway_settings(exporter: InMemorySpanExporter) -> dict[str, Any]:
    """(After the span exporter is in place.)"""
    return {"api_keys": KEY, "lmstudio_api_token": TOKEN}


@pytest.fixture(scope="module")
def bridge(bridge: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's gateway, every request with the API key."""
    bridge.headers["Authorization"] = f"Bearer {KEY}"
    return bridge


def trace_of(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes, each value as the SDK holds it (a sequence as a tuple)."""
    return dict(span.attributes or {})


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_span_tree_of_a_run_with_two_concurrent_tool_calls(
    bridge: httpx.AsyncClient, exporter: InMemorySpanExporter, settings: Settings
) -> None:
    response = await bridge.post("/v1/autonomous", json={"task": SLOW_PAIR, "mcp_servers": ["fault"]})
    result = response.json()
    assert result["status"] == "completed", result
    assert response.headers["x-trace-id"] == result["trace_id"]
    spans = trace_of(exporter, result["trace_id"])
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]  # exactly one server span
    assert server.parent is None and server.name == "POST /v1/autonomous"
    [run] = [s for s in children(spans, server) if s.name == "agent.run"]
    # besides the run: what opening it needed the first time (model list, starting the MCP server)
    assert {s.name for s in children(spans, server)} - {"agent.run"} <= {
        "GET",
        "MCP send initialize",
        "MCP send tools/list",
    }
    assert run.attributes is not None
    assert run.attributes["bridge.run_id"] == result["run_id"]
    assert run.attributes["bridge.status"] == "completed" and run.attributes["bridge.rounds"] == 1
    assert run.attributes["gen_ai.request.model"] == "qwen/qwen3-4b"
    assert attributes(run)["bridge.mcp_servers"] == ("fault",)
    # the run's own calls (the first run on a server also asks it once for its resources: cached after)
    under_run = sorted(
        (s for s in children(spans, run) if s.name != "MCP send resources/list"), key=lambda s: s.start_time or 0
    )
    assert [s.name for s in under_run] == [
        "chat qwen/qwen3-4b",
        "tools/call fault__slow",
        "tools/call fault__slow",
        "chat qwen/qwen3-4b",
    ]
    chat, tool_a, tool_b, _ = under_run
    assert chat.kind == SpanKind.CLIENT and chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "lmstudio"
    assert chat.attributes["gen_ai.response.model"] == "qwen/qwen3-4b"
    usage = attributes(chat)
    assert usage["gen_ai.usage.input_tokens"] > 0 and usage["gen_ai.usage.output_tokens"] > 0
    assert list(usage["gen_ai.response.finish_reasons"]) == ["tool_calls"]
    assert [c.name for c in children(spans, chat)] == ["POST"]  # the HTTPX client span
    url = httpx.URL(settings.lmstudio_base_url)  # which LM Studio host served it
    assert chat.attributes["bridge.lmstudio.host"] == settings.lmstudio_base_url
    assert (chat.attributes["server.address"], chat.attributes["server.port"]) == (url.host, url.port)
    assert (tool_a.start_time or 0) < (tool_b.end_time or 0) and (tool_b.start_time or 0) < (tool_a.end_time or 0)
    for tool in (tool_a, tool_b):
        assert tool.attributes is not None
        assert tool.attributes["mcp.server"] == "fault" and tool.attributes["gen_ai.tool.name"] == "slow"
        assert tool.attributes["bridge.tool.outcome"] == "ok" and tool.attributes["bridge.tool.is_error"] is False
        assert "bridge.tool.arguments" not in tool.attributes  # content capture is off by default
        assert [c.name for c in children(spans, tool)] == ["MCP send tools/call slow"]  # the SDK's span, _meta


async def test_health_readiness_and_metrics_are_not_traced(
    bridge: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    for path in ("/healthz", "/readyz", "/metrics"):
        await bridge.get(path)
    assert [s.name for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER] == []


async def test_request_id_is_honoured_or_generated(bridge: httpx.AsyncClient) -> None:
    given = await bridge.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await bridge.get("/v1/models")
    assert len(made.headers["x-request-id"]) == 32
    hostile = await bridge.get("/v1/models", headers={"X-Request-ID": "a b<script>"})
    assert len(hostile.headers["x-request-id"]) == 32  # replaced, not echoed


async def test_metrics_move_after_runs(bridge: httpx.AsyncClient, settings: Settings) -> None:
    def value(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (await bridge.get("/metrics")).text
    await bridge.post(
        "/v1/autonomous",
        json={"task": echo("x"), "mcp_servers": ["fault"]},
    )
    await bridge.post("/v1/autonomous", json={"task": "x", "model": "nope"})
    after = (await bridge.get("/metrics")).text
    for name in (
        'bridge_runs_total{status="completed"}',
        'bridge_run_duration_seconds_count{status="completed"}',
        'bridge_run_rounds_count{status="completed"}',
        'bridge_tool_calls_total{outcome="ok",server="fault",tool="echo"}',
        'bridge_tool_call_duration_seconds_count{server="fault",tool="echo"}',
        f'bridge_lmstudio_request_duration_seconds_count{{host="{settings.lmstudio_base_url}",operation="chat",outcome="ok"}}',
        'bridge_tokens_total{direction="input",model="qwen/qwen3-4b"}',
        'bridge_http_requests_total{method="POST",route="/v1/autonomous",status="200"}',
        'bridge_http_requests_total{method="POST",route="/v1/autonomous",status="422"}',
        "bridge_model_cache_hits_total",
    ):
        assert value(after, name) > value(before, name), name
    for name in (
        "bridge_runs_in_flight",
        "bridge_mcp_sessions_live",
        'bridge_breaker_state{upstream="lmstudio"}',
        f'bridge_lmstudio_in_flight{{host="{settings.lmstudio_base_url}"}} 0.0',
        "bridge_runs_rejected_total",
        "bridge_model_cache_misses_total",
        "bridge_lmstudio_retries_total",
    ):
        assert name in after, name


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter([KEY, TOKEN, ENV_SECRET]))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_no_secret_in_logs_or_spans(
    bridge: httpx.AsyncClient, exporter: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    exporter.clear()
    logging.getLogger("test").warning("leak attempt: %s %s Bearer %s", KEY, ENV_SECRET, TOKEN)
    result = (await bridge.post("/v1/autonomous", json={"task": SLOW_PAIR, "mcp_servers": ["fault"]})).json()
    await bridge.get("/v1/mcp/servers")
    await bridge.get("/v1/models", headers={"Authorization": "Bearer wrong-key"})
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    # the gateway's lines (the test client's own httpx lines share the test's context, and with it the run id)
    ours = [line for line in lines if line["logger"].startswith("lmstudio_bridge")]
    [finished] = [line for line in ours if line.get("run_id") == result["run_id"]]
    assert finished["msg"].startswith("run finished: completed") and finished["trace_id"] == result["trace_id"]
    assert result["status"] == "completed"
    spans = json.dumps(
        [dict(s.attributes or {}) | {"name": s.name} for s in exporter.get_finished_spans()], default=str
    )
    for secret in (KEY, TOKEN, ENV_SECRET):
        assert secret not in json_logs.getvalue()
        assert secret not in spans


def test_json_log_lines_carry_trace_and_run_ids() -> None:
    from opentelemetry import trace

    from services.tracing import current_run_id

    formatter = JSONFormatter(["s3cr3t-value"])
    tracer_provider(make_settings())
    token = current_run_id.set("run_42")
    try:
        with trace.get_tracer("t").start_as_current_span("x") as span:
            record = logging.LogRecord(
                "n", logging.INFO, __file__, 1, "key=%s auth=Bearer abc.def", ("s3cr3t-value",), None
            )
            line = json.loads(formatter.format(record))
    finally:
        current_run_id.reset(token)
    assert line["run_id"] == "run_42"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["msg"] == "key=[REDACTED] auth=Bearer [REDACTED]"


def test_a_bearer_token_is_redacted_whatever_the_case_of_bearer() -> None:
    redact = Redactor()
    assert redact("auth=BeArEr abc.def x") == "auth=BeArEr [REDACTED] x"
    assert redact('{"h": "BEARER\tabc"}') == '{"h": "BEARER\t[REDACTED]"}'
    assert redact("no token here, a bear and a rer") == "no token here, a bear and a rer"


def test_configured_lines_are_whole_from_records_without_caller_thread_or_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`configure_logging` (undone after the test by tests/conftest.py) turns off what no line shows."""
    configure_logging("INFO", ["s3cr3t-value"])
    logging.getLogger("lmstudio_bridge.t").info("key=%s", "s3cr3t-value", exc_info=ValueError("boom"))
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "key=[REDACTED]" and line["level"] == "INFO" and line["logger"] == "lmstudio_bridge.t"
    assert "ValueError: boom" in line["exc"]
    record = logging.getLogger("n").makeRecord("n", logging.INFO, "(unknown file)", 0, "m", (), None)
    assert (record.threadName, record.processName, record.process) == (None, None, None)


async def test_content_capture_when_turned_on(
    mock: MockLMStudio, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    config = write_mcp_json(tmp_path / "mcp.json", str(tmp_path))
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(config), otel_capture_content=True)
    async with app_client(settings) as client:
        body = {"task": echo("captured-text"), "mcp_servers": ["fault"]}
        result = (await client.post("/v1/autonomous", json=body)).json()
    spans = trace_of(exporter, result["trace_id"])
    [tool] = [s for s in spans if s.name == "tools/call fault__echo"]
    assert tool.attributes is not None and "captured-text" in str(tool.attributes["bridge.tool.arguments"])
    assert "captured-text" in str(tool.attributes["bridge.tool.output"])
    [run] = [s for s in spans if s.name == "agent.run"]
    assert run.attributes is not None and "captured-text" in str(run.attributes["bridge.task"])


async def test_otlp_export_reaches_a_local_receiver(mock: MockLMStudio, tmp_path: Path) -> None:
    received: list[bytes] = []

    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    receiver_port, gateway_port = free_port(), free_port()
    receiver = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]),
            host="127.0.0.1",
            port=receiver_port,
            log_level="warning",
        )
    )
    receiver_task = asyncio.ensure_future(receiver.serve())
    config = write_mcp_json(tmp_path / "mcp.json", str(tmp_path))
    env = {
        **os.environ,
        "LMSTUDIO_BASE_URL": mock.base_url,
        "MCP_CONFIG": str(config),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "bridge-under-test",
    }
    log = log_file("bridge-otlp-")
    gateway = await spawn_python("app.cli", "serve", "--port", str(gateway_port), log=log, env=env)
    try:
        await wait_healthy(f"http://127.0.0.1:{gateway_port}/healthz", gateway, 30, lambda: log_tail(log.name))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=30) as client:
            run = await client.post("/v1/autonomous", json={"task": echo("otlp"), "mcp_servers": ["fault"]})
            assert run.status_code == 200
        await eventually(lambda: any(b"agent.run" in body for body in received), what="the run's spans exported")
        exported = b"".join(received)
        assert b"agent.run" in exported and b"tools/call fault__echo" in exported
        assert b"bridge-under-test" in exported
        assert bytes.fromhex(run.json()["trace_id"]) in exported
    finally:
        await terminate(gateway, 30)
        log.close()
        os.unlink(log.name)
        receiver.should_exit = True
        await receiver_task


async def test_without_server_instrumentation_the_middleware_opens_the_trace() -> None:
    from starlette.responses import JSONResponse

    from app.telemetry import RequestContextMiddleware
    from services.metrics import Metrics
    from services.tracing import trace_id

    async def seen(request: Request) -> JSONResponse:
        return JSONResponse({"trace_id": trace_id()})

    app = RequestContextMiddleware(Starlette(routes=[Route("/v1/x", seen)]), Metrics(), open_trace=True)
    tracer_provider(make_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        parent = "0af7651916cd43dd8448eb211c80319c"
        continued = await client.get("/v1/x", headers={"traceparent": f"00-{parent}-b7ad6b7169203331-01"})
        fresh = await client.get("/v1/x")
    assert continued.json()["trace_id"] == parent == continued.headers["x-trace-id"]
    assert len(fresh.json()["trace_id"]) == 32 and fresh.json()["trace_id"] != parent
    assert fresh.headers["x-trace-id"] == fresh.json()["trace_id"]
