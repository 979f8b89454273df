"""One autonomous run on the REAL time server, against two upstreams that share no code (our mock and
bench/stdlib_upstream.py), at default and quiet logging, vs the hand-written script and the floor."""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import stdlib_upstream as stdlib_fake
from bench.autonomous import MODEL as MOCK_MODEL
from bench.autonomous import Script
from bench.common import (
    Contender,
    Row,
    Server,
    compare,
    floor,
    gateway,
    http_client,
    mcp_session,
    mock_lmstudio,
    post_json,
    server_params,
    stdlib_upstream,
    throughputs,
    verdict,
    warm_up,
    write_mcp_config,
)
from tests.helpers import TIME_CALL, script

N = 500
WARMUP = 30
CONCURRENCY, CONCURRENT_RUNS = 16, 480  # runs per contender, in 4 interleaved rounds
COUNT_RUNS = 20  # runs whose upstream requests are counted
SERVER = "time"  # mcp-server-time (`python -m mcp_server_time --local-timezone UTC`), as the tests start it
QUESTION = "What time is it in UTC? Use the tool."
LEVELS = {"INFO": "default logging (INFO)", "WARNING": "quiet logging (WARNING)"}
ALLOWANCE_MS = 0.5  # DESIGN.md "Targets": p50 <= script + floor + 0.5 ms, CPU <= script's CPU + 0.5 ms


@dataclass
class Upstream:
    name: str
    server: Server
    model: str
    task: str
    answer_prefix: str
    script: Script | None = None
    script_c: Contender | None = None


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-upstreams-")))
        config = write_mcp_config(directory, [SERVER])
        base = await stack.enter_async_context(floor())
        mock = await stack.enter_async_context(mock_lmstudio())
        fake = await stack.enter_async_context(stdlib_upstream())
        upstreams = [
            Upstream("mock", mock, MOCK_MODEL, f"{QUESTION} {script(calls=[[TIME_CALL]])}", "Based on the tools: "),
            Upstream("stdlib", fake, stdlib_fake.MODEL, QUESTION, stdlib_fake.ANSWER_PREFIX),
        ]
        client = await stack.enter_async_context(http_client())
        session = await stack.enter_async_context(mcp_session(server_params(directory, SERVER)))

        floor_c = Contender("floor (fixed JSON)", post_json(client, base.url("/"), {"task": QUESTION}), [base])
        contenders = [floor_c]
        gateways: dict[tuple[str, str], tuple[Server, Contender]] = {}
        for up in upstreams:
            up.script = Script(client, up.server, session, server=SERVER, model=up.model, prompt=up.task)
            await up.script.setup()
            up.script_c = Contender(f"script on {up.name} (httpx + ClientSession)", up.script.run, [up.server])
            contenders.append(up.script_c)
            for level in LEVELS:
                bridge = await stack.enter_async_context(
                    gateway(up.server.base_url, config, name=f"gateway-{up.name}-{level}", BRIDGE_LOG_LEVEL=level)
                )
                body = {"task": up.task, "mcp_servers": [SERVER]}
                label = f"gateway on {up.name}, {LEVELS[level]}"
                bridge_c = Contender(label, post_json(client, bridge.url("/v1/autonomous"), body), [bridge, up.server])
                gateways[(up.name, level)] = (bridge, bridge_c)
                contenders.append(bridge_c)
            await _check(up, [c for (name, _), (_, c) in gateways.items() if name == up.name])

        await warm_up(contenders, WARMUP)
        hops = {key: await _upstream_requests(client, up, c) for up in upstreams for key, (_, c) in _of(gateways, up)}
        await compare(contenders, N)
        rates = await throughputs({c.label: c.call for c in contenders[1:]}, CONCURRENCY, CONCURRENT_RUNS)

        rows = _rows(floor_c, upstreams, gateways, hops, rates)
        return {
            "title": "Autonomous run on the real time server, two upstreams",
            "note": (
                f'`POST /v1/autonomous` with `mcp_servers: ["{SERVER}"]`: 2 LLM hops + 1 call of the REAL '
                "`mcp-server-time` (`python -m mcp_server_time --local-timezone UTC`, `get_current_time` with "
                '`{"timezone": "UTC"}`). Two zero-latency upstreams that share no code: the **mock** LM Studio '
                "(tests/mock_lmstudio, Starlette + uvicorn, LM Studio's REST API, told by a `[[mock ...]]` script "
                "in the task to call the tool) and **stdlib**, bench/stdlib_upstream.py (`http.server`, TCP_NODELAY, "
                "OpenAI's `/v1/models` only, always calls the tool first). Each upstream behind two gateways: "
                "default logging (INFO, as a user runs it; JSON lines to a file) and quiet (WARNING). **Script**: the "
                "same hops by hand in the benchmark process (httpx POSTs with the gateway's system prompt and tools, "
                "`call_tool` on a kept stdio session to the same time server); its CPU is the benchmark process's "
                f"CPU time while it ran. {N} sequential runs per contender after {WARMUP} warm-up runs, interleaved "
                "in 10 blocks, one keep-alive httpx client. Gateway CPU = the gateway process's user+system time / "
                "runs (its time-server child excluded). **Floor**: bench/floor.py answering the same kind of body "
                f"with a fixed JSON. Runs/s: {CONCURRENCY} workers sharing {CONCURRENT_RUNS} runs per contender, in "
                "4 rounds that interleave the contenders. Upstream "
                f"requests per run: counted by the upstream over {COUNT_RUNS} runs after the warm-up."
            ),
            "rows": rows,
        }


def _of(
    gateways: dict[tuple[str, str], tuple[Server, Contender]], up: Upstream
) -> list[tuple[tuple[str, str], tuple[Server, Contender]]]:
    return [(key, value) for key, value in gateways.items() if key[0] == up.name]


async def _check(up: Upstream, bridges: list[Contender]) -> None:
    """Both paths must do the same work and get an answer from the tool before anything is measured."""
    assert up.script is not None
    by_hand = await up.script.run()
    for bridge_c in bridges:
        result: Any = await bridge_c.call()
        if (
            result["status"] != "completed"
            or not str(result["output"]).startswith(up.answer_prefix + "{")
            or len(result["steps"]) != 1
            or result["steps"][0]["name"] != f"{SERVER}__get_current_time"
            or result["steps"][0]["is_error"]
            or result["model"] != up.model
        ):
            raise RuntimeError(f"unexpected run result from {bridge_c.label}: {result!r}")
    if not by_hand.startswith(up.answer_prefix + "{"):
        raise RuntimeError(f"unexpected script answer on {up.name}: {by_hand!r}")


async def _upstream_requests(client: httpx.AsyncClient, up: Upstream, contender: Contender) -> tuple[str, bool]:
    """`chat + model list` requests the upstream got per run of `contender`, over COUNT_RUNS runs."""
    reset, read = ("/_mock/reset", "/_mock/requests") if up.name == "mock" else ("/_stats/reset", "/_stats")
    (await client.post(up.server.url(reset))).raise_for_status()
    for _ in range(COUNT_RUNS):
        await contender.call()
    answer = (await client.get(up.server.url(read))).json()
    mock_log = answer.get("requests") if up.name == "mock" else None
    counts = Counter(answer) if mock_log is None else Counter(f"{e['method']} {e['path']}" for e in mock_log)
    chat = counts.pop("POST /v1/chat/completions", 0)
    listing = sum(n for key, n in counts.items() if key.startswith("GET ") and key.endswith("/models"))
    other = sum(counts.values()) - listing
    text = f"{chat / COUNT_RUNS:g} chat + {listing / COUNT_RUNS:g} model list"
    text += f" + {other / COUNT_RUNS:g} other" if other else ""
    return text, chat == 2 * COUNT_RUNS and listing == other == 0


def _rows(
    floor_c: Contender,
    upstreams: list[Upstream],
    gateways: dict[tuple[str, str], tuple[Server, Contender]],
    hops: dict[tuple[str, str], tuple[str, bool]],
    rates: dict[str, float],
) -> list[Row]:
    rows: list[Row] = [
        (f"{floor_c.label}: p50 / p99", f"{floor_c.p50:.2f} / {floor_c.p99:.2f} ms", "baseline"),
        ("floor CPU per request", f"{floor_c.cpu_ms(floor_c.servers[0]):.2f} ms", "baseline"),
    ]
    for up in upstreams:
        s = up.script_c
        assert s is not None
        rows.append(
            (
                f"{s.label}: p50 / p99, CPU per run (benchmark process)",
                f"{s.p50:.2f} / {s.p99:.2f} ms, {s.own_cpu_ms:.2f} ms",
                "baseline",
            )
        )
        for (_, level), (bridge, c) in _of(gateways, up):
            budget = s.p50 + floor_c.p50 + ALLOWANCE_MS
            excess = c.p50 - s.p50 - floor_c.p50
            cpu = c.cpu_ms(bridge)
            cpu_target = s.own_cpu_ms + ALLOWANCE_MS
            rows += [
                (f"{c.label}: p50 / p99", f"{c.p50:.2f} / {c.p99:.2f} ms", "see next rows"),
                (
                    f"{c.label}: p50 - (script p50 + floor p50)",
                    f"{excess:+.2f} ms ({verdict(c.p50 <= budget)})",
                    f"<= +{ALLOWANCE_MS:g} ms, i.e. p50 <= {budget:.2f} ms",
                ),
                (
                    f"{c.label}: gateway CPU per run (time server excluded)",
                    f"{cpu:.2f} ms ({verdict(cpu <= cpu_target)})"
                    if level == "INFO"
                    else f"{cpu:.2f} ms ({cpu - s.own_cpu_ms:+.2f} over the script)",
                    f"<= script CPU + {ALLOWANCE_MS:g} ms = {cpu_target:.2f} ms" if level == "INFO" else "report",
                ),
                (
                    f"{c.label}: upstream requests per run",
                    f"{hops[(up.name, level)][0]} ({verdict(hops[(up.name, level)][1])})",
                    "2 chat + 0 model list (the script's hops)",
                ),
            ]
        rows += [
            (
                f"runs/s at concurrency {CONCURRENCY} on {up.name}: gateway INFO / gateway WARNING / script",
                " / ".join(f"{rates[c.label]:.0f}" for c in [*(c for _, (_, c) in _of(gateways, up)), s]),
                "report",
            )
        ]
    return rows
