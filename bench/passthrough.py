"""Chat pass-through (`POST /v1/chat/completions`, no MCP) vs calling the mock directly vs the floor."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Contender,
    Row,
    bare_proxy,
    budget_row,
    compare,
    cpu_row,
    floor,
    gateway,
    http_client,
    latency_row,
    mock_lmstudio,
    post_json,
    verdict,
    warm_up,
    write_mcp_config,
)

N = 2000
WARMUP = 200
PATH = "/v1/chat/completions"
BODY = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Say hi."}]}
NOT_THERE = (404, 405)
FLOOR_TIMES = 3.0  # issue 35: gateway CPU per request <= 3x the floor's, same run
# paced: one request per contender every PACE_S, as a real engine's short chat spaces them (bench/real_engine.py:
# ~140 ms for 8 tokens); CPU counted around each request only, not over the pauses
PACE_S = 0.14
N_PACED = 40


async def paced(contenders: list[Contender], n: int) -> dict[str, tuple[float, float]]:
    """(p50 ms, CPU ms of the contender's own server, its first, per request) of each contender, `n` requests each, in
    turn, with PACE_S between requests: every request meets a process that has been idle."""
    samples: dict[str, list[float]] = {c.label: [] for c in contenders}
    cpu: dict[str, float] = dict.fromkeys(samples, 0.0)
    for _ in range(n):
        for contender in contenders:
            server = contender.servers[0]
            await asyncio.sleep(PACE_S)
            before, start = server.precise_cpu_s(), time.perf_counter()
            await contender.call()
            samples[contender.label].append(time.perf_counter() - start)
            cpu[contender.label] += server.precise_cpu_s() - before
    return {label: (statistics.median(s) * 1000, cpu[label] / n * 1000) for label, s in samples.items()}


def floor_times_row(gateway_ms: float, floor_ms: float, prefix: str = "") -> Row:
    times = gateway_ms / floor_ms
    return (
        f"{prefix}gateway CPU per request over the floor's",
        f"{times:.1f}x ({verdict(times <= FLOOR_TIMES)})",
        f"<= {FLOOR_TIMES:g}x (issue 35)",
    )


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-passthrough-")))
        config = write_mcp_config(directory, servers=[])  # no MCP servers: nothing but the pass-through
        base = await stack.enter_async_context(floor())
        mock = await stack.enter_async_context(mock_lmstudio())
        bridge = await stack.enter_async_context(gateway(mock.base_url, config))
        proxy = await stack.enter_async_context(bare_proxy(mock.base_url))
        client = await stack.enter_async_context(http_client())

        floor_c = Contender("floor (fixed JSON)", post_json(client, base.url("/"), BODY), [base])
        direct_c = Contender(f"direct `POST {PATH}` to the mock", post_json(client, mock.url(PATH), BODY), [mock])
        proxy_c = Contender(f"bare proxy `POST {PATH}`", post_json(client, proxy.url(PATH), BODY), [proxy, mock])
        bridge_c = Contender(f"gateway `POST {PATH}`", post_json(client, bridge.url(PATH), BODY), [bridge, mock])
        probe = await client.post(bridge.url(PATH), json=BODY)
        available = probe.status_code not in NOT_THERE
        if available:
            direct_answer: Any = await direct_c.call()
            bridge_answer: Any = await bridge_c.call()  # raises unless 200
            if bridge_answer["choices"][0]["message"] != direct_answer["choices"][0]["message"]:
                raise RuntimeError(f"the pass-through changed the answer: {bridge_answer!r} vs {direct_answer!r}")
        contenders = [floor_c, direct_c, proxy_c, *([bridge_c] if available else [])]
        await warm_up(contenders, WARMUP)
        await compare(contenders, N)
        slow = await paced(contenders, N_PACED)

        rows: list[Row] = [latency_row(floor_c), latency_row(direct_c), latency_row(proxy_c, "report")]
        if available:
            rows += [
                latency_row(bridge_c, "see next row"),
                budget_row(bridge_c, direct_c, floor_c, 0.5, "direct"),
                cpu_row("gateway CPU per request", bridge_c, bridge, 1.0),
                floor_times_row(bridge_c.cpu_ms(bridge), floor_c.cpu_ms(base)),
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
            (
                "bare proxy CPU per request, and over the floor's",
                f"{proxy_c.cpu_ms(proxy):.2f} ms/request, {proxy_c.cpu_ms(proxy) / floor_c.cpu_ms(base):.1f}x",
                "report (the hop alone)",
            ),
            (
                f"paced, one request every {PACE_S * 1000:.0f} ms ({N_PACED} each): p50 / CPU per request, "
                "floor; direct; bare proxy; " + ("gateway" if available else "(gateway not available)"),
                "; ".join(f"{p50:.2f} / {cpu:.2f} ms" for p50, cpu in slow.values()),
                "report (CPU: the server's; the gateway's own only)",
            ),
        ]
        if available:
            rows.append(floor_times_row(slow[bridge_c.label][1], slow[floor_c.label][1], "paced, "))
        return {
            "title": "Chat pass-through",
            "note": (
                f"`POST {PATH}` with a plain body (model + one user message, no `mcp_servers`, no tools): through "
                "the gateway (which forwards it to the mock LM Studio) vs straight to the zero-latency mock "
                f"(**direct**) vs bench/floor.py (**floor**, fixed JSON, served like the gateway) vs bench/proxy.py "
                "(**bare proxy**: the floor plus one aiohttp request to the mock, the least a Python gateway does). "
                f"{N:,} "
                f"sequential requests per contender after {WARMUP} warm-up requests, interleaved in 10 blocks, one "
                "keep-alive httpx client. CPU = the server process's user+system time over the measured requests / "
                "requests. **Paced**: then one request per contender every "
                f"{PACE_S * 1000:.0f} ms, as a real engine's short chat spaces them, so that every request meets an "
                "idle process (CPU read from /proc schedstat around each request). If the gateway answers 404/405 "
                "on the path the endpoint is reported as not available yet."
            ),
            "rows": rows,
        }
