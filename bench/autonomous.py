"""One autonomous run (2 LLM hops + 1 tool call, zero-latency mock) vs a hand-written script vs the floor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession

from bench.common import (
    Contender,
    PeakRSS,
    Row,
    Server,
    budget_row,
    compare,
    contender_client,
    cpu_row,
    floor,
    gateway,
    http_client,
    latency_row,
    mcp_session,
    mock_lmstudio,
    openai_tools,
    post_json,
    server_params,
    throughput,
    verdict,
    warm_up,
    write_mcp_config,
)
from services.agent.prompts import default_system_prompt
from tests.helpers import call, script

N = 300
WARMUP = 30
CONCURRENCY = {1: 100, 32: 320}  # concurrency -> runs
IN_FLIGHT = 500
DELAY_MS = 2000
MODEL = "qwen/qwen3-4b"  # the mock's loaded LLM, which the gateway picks as the default model
SERVER = "fault"
EXPECTED = "Based on the tools: hi"
ALLOWANCE_MS = 0.5  # DESIGN.md "Targets": p50 <= script + floor + 0.5 ms; CPU <= the script's CPU + 0.5 ms


def task(delay_ms: int = 0) -> str:
    """The mock LM Studio calls the fault server's echo once (after `delay_ms` per LLM hop), then answers."""
    spec: dict[str, Any] = {"calls": [[call(f"{SERVER}__echo", {"text": "hi"})]]}
    if delay_ms:
        spec["delay_ms"] = delay_ms
    return "Echo hi with the tool. " + script(**spec)


class Script:
    """The same run by hand: two POSTs to the upstream's chat endpoint and one `call_tool` on a kept session.

    By default the run of this section (the mock, the fault server's echo); `server`, `model` and `prompt`
    (the task) make it the same run on another upstream or MCP server (bench/run_upstreams.py).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        upstream: Server,
        session: ClientSession,
        *,
        server: str = SERVER,
        model: str = MODEL,
        prompt: str | None = None,
    ) -> None:
        self.client = client
        self.chat_url = upstream.url("/v1/chat/completions")
        self.session = session
        self.server = server
        self.model = model
        self.tools: list[dict[str, Any]] = []
        self.system = default_system_prompt([server])
        self.task = task() if prompt is None else prompt

    async def setup(self) -> None:
        """The tools as OpenAI function tools, named like the gateway names them (`<server>__<tool>`)."""
        listed = await self.session.list_tools()
        self.tools = openai_tools(listed.tools, self.server)

    async def _chat(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "tools": self.tools}
        response = await self.client.post(self.chat_url, json=body)
        response.raise_for_status()
        message: dict[str, Any] = response.json()["choices"][0]["message"]
        return message

    async def _tool(self, call: dict[str, Any]) -> dict[str, Any]:
        name = call["function"]["name"].removeprefix(f"{self.server}__")
        result = await self.session.call_tool(name, json.loads(call["function"]["arguments"]))
        text = "".join(getattr(block, "text", "") for block in result.content)
        return {"role": "tool", "tool_call_id": call["id"], "content": text}

    async def run(self) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.task},
        ]
        while True:
            message = await self._chat(messages)
            calls = message.get("tool_calls") or []
            if not calls:
                return str(message.get("content") or "")
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            messages += await asyncio.gather(*(self._tool(c) for c in calls))


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-autonomous-")))
        config = write_mcp_config(directory)
        base = await stack.enter_async_context(floor())
        mock = await stack.enter_async_context(mock_lmstudio())
        bridge = await stack.enter_async_context(
            gateway(
                mock.base_url,
                config,
                BRIDGE_MAX_CONCURRENT_RUNS=str(IN_FLIGHT * 2),
                BRIDGE_LMSTUDIO_MAX_CONNECTIONS=str(IN_FLIGHT * 2),
            )
        )
        await asyncio.sleep(1.0)
        idle_rss = bridge.rss_mb()
        floor_client, script_client, run_client = [await contender_client(stack) for _ in range(3)]
        session = await stack.enter_async_context(mcp_session(server_params(directory, SERVER)))
        script = Script(script_client, mock, session)
        await script.setup()

        body = {"task": task(), "mcp_servers": [SERVER]}
        floor_c = Contender("floor (fixed JSON)", post_json(floor_client, base.url("/"), body), [base])
        script_c = Contender("hand-written script (httpx + ClientSession)", script.run, [mock])
        run_call = post_json(run_client, bridge.url("/v1/autonomous"), body)
        bridge_c = Contender("gateway `POST /v1/autonomous`", run_call, [bridge, mock])
        await _check(bridge_c, script)

        contenders = [floor_c, script_c, bridge_c]
        await warm_up(contenders, WARMUP)
        children_before = bridge.descendants()
        await compare(contenders, N)
        rates = {
            (label, c): await throughput(call, c, total)
            for c, total in CONCURRENCY.items()
            for label, call in (("gateway", bridge_c.call), ("script", script_c.call))
        }
        spawns = len(bridge.descendants() - children_before)
        warm_rss = bridge.rss_mb()
        burst = await _in_flight(stack, bridge, mock)

        rows: list[Row] = [
            latency_row(floor_c),
            latency_row(script_c),
            latency_row(bridge_c, "see next row"),
            budget_row(bridge_c, script_c, floor_c, ALLOWANCE_MS, "script"),
            (
                "script CPU per run (the benchmark process while it ran)",
                f"{script_c.own_cpu_ms:.2f} ms/run",
                "baseline",
            ),
            cpu_row(
                "gateway CPU per run (gateway process only)",
                bridge_c,
                bridge,
                script_c.own_cpu_ms + ALLOWANCE_MS,
                unit="run",
            ),
            cpu_row("floor CPU per request", floor_c, base),
            (
                "mock LM Studio CPU per run: gateway / script (same work)",
                f"{bridge_c.cpu_ms(mock):.2f} / {script_c.cpu_ms(mock):.2f} ms/run",
                "equal",
            ),
        ]
        rows += [
            (
                f"runs/s at concurrency {c} ({total} runs): gateway / script",
                f"{rates[('gateway', c)]:.0f} / {rates[('script', c)]:.0f}",
                "report",
            )
            for c, total in CONCURRENCY.items()
        ]
        rows += [
            (
                f"gateway child processes spawned during {N + sum(CONCURRENCY.values())} measured runs",
                f"{spawns} ({verdict(spawns == 0)})",
                "0",
            ),
            ("gateway RSS, idle after start-up", f"{idle_rss:.1f} MB ({verdict(idle_rss <= 100)})", "<= 100 MB"),
            ("gateway RSS after the runs above (fault session open)", f"{warm_rss:.1f} MB", "report"),
            *burst,
        ]
        return {
            "title": "Autonomous run (2 LLM hops + 1 tool call)",
            "note": (
                f'`POST /v1/autonomous` with `mcp_servers: ["{SERVER}"]` and a task whose `[[mock ...]]` script '
                "makes the zero-latency mock LM Studio call `fault__echo` once, then answer from the tool output. "
                f"{N} sequential runs per contender after {WARMUP} warm-up runs, interleaved in 10 blocks, one "
                "keep-alive httpx client per contender. **Script**: the same hops by hand in the benchmark process "
                "— a POST to the mock's /v1/chat/completions with the same system prompt, task and tools, "
                "`call_tool` on a kept stdio session to the same fault server, a second POST with the assistant "
                "and tool messages. "
                "**Floor**: bench/floor.py answering the same request body with a fixed JSON. CPU = the "
                "process's user+system time over the measured runs / runs (the script's: the benchmark process's "
                "while the script ran); the gateway here logs at WARNING (bench/run_upstreams.py measures the "
                "default INFO too). Runs/s: N workers sharing the runs. "
                f"Memory: {IN_FLIGHT} runs started at once, each waiting {DELAY_MS} ms per LLM hop in the mock "
                f"(`delay_ms`), RSS sampled every 50 ms; this gateway has BRIDGE_MAX_CONCURRENT_RUNS and "
                f"BRIDGE_LMSTUDIO_MAX_CONNECTIONS at {IN_FLIGHT * 2} so that they can all be in flight."
            ),
            "rows": rows,
        }


async def _check(bridge_c: Contender, script: Script) -> None:
    """Both paths must do the same work and get the same answer before anything is measured."""
    result: Any = await bridge_c.call()
    by_hand = await script.run()
    if (
        result["status"] != "completed"
        or result["output"] != EXPECTED
        or by_hand != EXPECTED
        or len(result["steps"]) != 1
        or result["model"] != MODEL
    ):
        raise RuntimeError(f"unexpected run results: gateway {result!r}, script {by_hand!r}")


async def _in_flight(stack: contextlib.AsyncExitStack, bridge: Server, mock: Server) -> list[Row]:
    """Start IN_FLIGHT slow runs at once; peak RSS while they run, and proof that they overlapped."""
    control = await stack.enter_async_context(http_client())
    (await control.post(mock.url("/_mock/reset"))).raise_for_status()
    burst_client = await stack.enter_async_context(http_client(IN_FLIGHT + 10))
    slow = post_json(burst_client, bridge.url("/v1/autonomous"), {"task": task(DELAY_MS), "mcp_servers": [SERVER]})
    async with PeakRSS(bridge) as rss:
        start, cpu = time.perf_counter(), bridge.cpu_s()
        results = await asyncio.gather(*(slow() for _ in range(IN_FLIGHT)), return_exceptions=True)
        wall, cpu = time.perf_counter() - start, bridge.cpu_s() - cpu
    completed = sum(1 for r in results if isinstance(r, dict) and r.get("status") == "completed")
    failures = Counter(getattr(r, "summary", repr(r)) for r in results if not isinstance(r, dict))
    failed = "; ".join(f"{n} x {what}" for what, n in failures.items())
    log = (await control.get(mock.url("/_mock/requests"))).json()["requests"]
    overlap = _max_overlap([(e["started"], e["ended"]) for e in log if e["path"] == "/v1/chat/completions"])
    return [
        (
            f"gateway peak RSS with {IN_FLIGHT} runs in flight",
            f"{rss.peak_mb:.1f} MB ({verdict(rss.peak_mb <= 250)})",
            "<= 250 MB",
        ),
        (
            f"{IN_FLIGHT} slow runs: completed / chat requests waiting in the mock at once / wall time",
            f"{completed} / {overlap} / {wall:.1f} s" + (f" (failed: {failed})" if failures else ""),
            f"{IN_FLIGHT} / {IN_FLIGHT} / report (the mock alone takes 2 x {DELAY_MS / 1000:g} s)",
        ),
        (f"gateway CPU per run with {IN_FLIGHT} in flight", f"{cpu / IN_FLIGHT * 1000:.2f} ms/run", "report"),
    ]


def _max_overlap(intervals: list[tuple[float, float | None]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals if e is not None])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
