"""The cost of tracing: the same autonomous run with spans off (the default) and on (OTLP export)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from bench.autonomous import EXPECTED, SERVER, task
from bench.common import (
    Contender,
    Row,
    compare,
    cpu_row,
    floor,
    gateway,
    http_client,
    latency_row,
    mock_lmstudio,
    post_json,
    warm_up,
    write_mcp_config,
)

N = 300
WARMUP = 30


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-trace-")))
        config = write_mcp_config(directory, [SERVER])
        mock = await stack.enter_async_context(mock_lmstudio())
        receiver = await stack.enter_async_context(floor())  # takes the OTLP POSTs and answers 200
        plain = await stack.enter_async_context(gateway(mock.url(""), config))
        traced = await stack.enter_async_context(
            gateway(mock.url(""), config, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url(""), OTEL_BSP_SCHEDULE_DELAY="200")
        )
        client = await stack.enter_async_context(http_client())
        body = {"task": task(), "mcp_servers": [SERVER]}
        off = Contender("run, tracing off (default)", post_json(client, plain.url("/v1/autonomous"), body), [plain])
        on = Contender("run, tracing on (OTLP export)", post_json(client, traced.url("/v1/autonomous"), body), [traced])
        for contender in (off, on):
            answer: Any = await contender.call()
            assert answer["output"] == EXPECTED
        await warm_up([off, on], WARMUP)
        await compare([off, on], N)
        cost = on.p50 - off.p50
        rows: list[Row] = [
            latency_row(off),
            latency_row(on),
            ("tracing cost: p50 on - p50 off", f"{cost:+.2f} ms", "report"),
            cpu_row("gateway CPU per run, tracing off", off, plain, unit="run"),
            cpu_row("gateway CPU per run, tracing on (span export included)", on, traced, unit="run"),
        ]
        return {
            "title": "Cost of tracing",
            "note": (
                f"The autonomous run of the section above, {N} sequential runs per gateway after {WARMUP} warm-up "
                "runs, interleaved in 10 blocks, against two gateways started side by side: one with the default "
                "set-up (spans are not recorded; trace ids still made), one with OTEL_EXPORTER_OTLP_ENDPOINT "
                "set, which records every span (server, agent.run, 2 chat, 1 tool, HTTP client and MCP SDK spans) "
                "and exports them in batches over OTLP/HTTP to a local receiver (the floor app, which answers 200)."
            ),
            "rows": rows,
        }
