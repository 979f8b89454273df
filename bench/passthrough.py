"""Chat pass-through (`POST /v1/chat/completions`, no MCP) vs calling the mock directly vs the floor."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    Contender,
    Row,
    budget_row,
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

N = 2000
WARMUP = 200
PATH = "/v1/chat/completions"
BODY = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Say hi."}]}
NOT_THERE = (404, 405)


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-passthrough-")))
        config = write_mcp_config(directory, servers=[])  # no MCP servers: nothing but the pass-through
        base = await stack.enter_async_context(floor())
        mock = await stack.enter_async_context(mock_lmstudio())
        bridge = await stack.enter_async_context(gateway(mock.base_url, config))
        client = await stack.enter_async_context(http_client())

        floor_c = Contender("floor (fixed JSON)", post_json(client, base.url("/"), BODY), [base])
        direct_c = Contender(f"direct `POST {PATH}` to the mock", post_json(client, mock.url(PATH), BODY), [mock])
        bridge_c = Contender(f"gateway `POST {PATH}`", post_json(client, bridge.url(PATH), BODY), [bridge, mock])
        probe = await client.post(bridge.url(PATH), json=BODY)
        available = probe.status_code not in NOT_THERE
        if available:
            direct_answer: Any = await direct_c.call()
            bridge_answer: Any = await bridge_c.call()  # raises unless 200
            if bridge_answer["choices"][0]["message"] != direct_answer["choices"][0]["message"]:
                raise RuntimeError(f"the pass-through changed the answer: {bridge_answer!r} vs {direct_answer!r}")
        contenders = [floor_c, direct_c, *([bridge_c] if available else [])]
        await warm_up(contenders, WARMUP)
        await compare(contenders, N)

        rows: list[Row] = [latency_row(floor_c), latency_row(direct_c)]
        if available:
            rows += [
                latency_row(bridge_c, "see next row"),
                budget_row(bridge_c, direct_c, floor_c, 0.5, "direct"),
                cpu_row("gateway CPU per request", bridge_c, bridge, 1.0),
            ]
        else:
            rows.append(
                (
                    f"gateway `POST {PATH}`",
                    f"endpoint not available yet (HTTP {probe.status_code})",
                    "p50 <= direct + floor + 0.5 ms; <= 1 ms CPU/request",
                )
            )
        rows += [
            cpu_row("floor CPU per request", floor_c, base),
            cpu_row("mock LM Studio CPU per request (direct)", direct_c, mock),
        ]
        return {
            "title": "Chat pass-through",
            "note": (
                f"`POST {PATH}` with a plain body (model + one user message, no `mcp_servers`, no tools): through "
                "the gateway (which forwards it to the mock LM Studio) vs straight to the zero-latency mock "
                f"(**direct**) vs bench/floor.py (**floor**, fixed JSON, served like the gateway). {N:,} "
                f"sequential requests per contender after {WARMUP} warm-up requests, interleaved in 10 blocks, one "
                "keep-alive httpx client. CPU = the server process's user+system time over the measured requests / "
                "requests. If the gateway answers 404/405 on the path the endpoint is reported as not available yet."
            ),
            "rows": rows,
        }
