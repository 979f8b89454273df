"""The gateway against a REAL engine (llama.cpp's llama-server + SmolLM2-135M, tests/real_engine/engine.py):
the same chat and the same one-tool run, through the gateway and straight to the engine.

The engine's own compute time varies more than the gateway's whole cost (other processes share the two
cores), so every call also records what the engine spent on it: the growth of llama-server's
`llamacpp:prompt_seconds_total + llamacpp:tokens_predicted_seconds_total` across the call (the calls are
sequential). Latency minus that is the time outside the engine's compute; the gateway's overhead is the
difference of those medians. The plain p50 difference is reported too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession

from bench.common import (
    Row,
    Server,
    bare_proxy,
    gateway,
    http_client,
    mcp_session,
    openai_tools,
    server_params,
    verdict,
    write_mcp_config,
)
from services.agent.prompts import FINAL_ANSWER_PROMPT
from tests.real_engine.engine import PARALLEL, THREADS, RealEngine, running_engine

N_CHAT = 50
N_RUN = 10
WARMUP = 2
SERVER = "time"
OWN_SHARE = 0.01  # the gateway's own share of a chat, over the bare proxy, at most this share of the engine's compute
CHAT_TOKENS = 8  # the chat always generates exactly this many (finish_reason "length")
RUN_TOKENS = 48  # per engine call of the run: the call takes ~35, the final answer is cut here
STORY = "Write a very long story about a cat who lives in Paris."
# as in tests/real_engine/test_gateway.py: the template's default system message, a prefill that starts
# the model inside a call, and a stop string that ends the answer after the first call
SYSTEM = {"role": "system", "content": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}
USER = {"role": "user", "content": "What time is it in Paris?"}
PREFILL = {"role": "assistant", "content": "<tool_call>\n"}
COMMON = {"max_tokens": RUN_TOKENS, "temperature": 0, "stop": ["</tool_call>"]}

Outcome = int  # tool calls made (chat: 0)


@dataclass
class Way:
    """One way of doing the work; per call: latency, the engine's compute seconds, tool calls made."""

    label: str
    call: Callable[[], Awaitable[Outcome]]
    latency: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    gateway_cpu_s: float = 0.0

    def p(self, q: float) -> float:
        """Nearest-rank percentile in ms."""
        ordered = sorted(self.latency)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    @property
    def engine_ms(self) -> float:
        return statistics.median(self.engine) * 1000

    @property
    def outside_ms(self) -> float:
        """Median time outside the engine's compute (latency - engine seconds of the same call)."""
        return statistics.median(a - b for a, b in zip(self.latency, self.engine, strict=True)) * 1000


async def engine_seconds(client: httpx.AsyncClient, engine: RealEngine) -> float:
    """llama-server's cumulative compute seconds (prompt + generation); up to date when an answer arrives."""
    response = await client.get(f"{engine.base_url}/metrics")
    response.raise_for_status()
    values = dict(line.split(" ", 1) for line in response.text.splitlines() if line and not line.startswith("#"))
    return float(values["llamacpp:prompt_seconds_total"]) + float(values["llamacpp:tokens_predicted_seconds_total"])


async def measure(ways: list[Way], n: int, client: httpx.AsyncClient, engine: RealEngine, bridge: Server) -> None:
    """n calls per way, alternating (ABBA: the order reversed every other time) so that drift hits all alike."""
    for i in range(n):
        for way in ways if i % 2 == 0 else ways[::-1]:
            before, cpu = await engine_seconds(client, engine), bridge.precise_cpu_s()
            start = time.perf_counter()
            outcome = await way.call()
            way.latency.append(time.perf_counter() - start)
            way.gateway_cpu_s += bridge.precise_cpu_s() - cpu
            way.engine.append(await engine_seconds(client, engine) - before)
            way.outcomes.append(outcome)


def post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def call() -> dict[str, Any]:
        response = await client.post(url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:1000]}")
        return dict(response.json())

    return call


def chat_call(client: httpx.AsyncClient, url: str, model: str) -> Callable[[], Awaitable[Outcome]]:
    body = {"model": model, "messages": [{"role": "user", "content": STORY}], "max_tokens": CHAT_TOKENS}
    send = post(client, url, {**body, "temperature": 0})

    async def call() -> Outcome:
        answer = await send()
        if answer["usage"]["completion_tokens"] != CHAT_TOKENS:
            raise RuntimeError(f"the chat did not generate {CHAT_TOKENS} tokens: {answer!r}")
        return 0

    return call


def gateway_run(client: httpx.AsyncClient, bridge: Server, model: str) -> Callable[[], Awaitable[Outcome]]:
    """The run through the gateway: one forced round (max_rounds 1), then the final answer without tools."""
    body = {
        "model": model,
        "messages": [SYSTEM, USER, PREFILL],
        "mcp_servers": [SERVER],
        "tool_choice": "required",
        "max_rounds": 1,
        **COMMON,
    }
    send = post(client, bridge.url("/v1/chat/completions"), body)

    async def call() -> Outcome:
        run = (await send())["bridge_run"]
        return sum(1 for step in run["steps"] if not step["is_error"])

    return call


class DirectRun:
    """The same run by hand: the forced call, the tool on a kept MCP session, the final answer without tools
    (the messages the gateway sends, FINAL_ANSWER_PROMPT included)."""

    def __init__(self, client: httpx.AsyncClient, engine: RealEngine, session: ClientSession) -> None:
        self.client = client
        self.url = f"{engine.base_url}/v1/chat/completions"
        self.model = engine.model_id
        self.session = session
        self.tools: list[dict[str, Any]] = []

    async def setup(self) -> None:
        listed = await self.session.list_tools()
        self.tools = openai_tools(listed.tools, SERVER)

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        return await post(self.client, self.url, body)()

    async def _tool(self, call: dict[str, Any]) -> dict[str, Any]:
        name = call["function"]["name"].removeprefix(f"{SERVER}__")
        result = await self.session.call_tool(name, json.loads(call["function"]["arguments"]))
        text = "".join(getattr(block, "text", "") for block in result.content)
        return {"role": "tool", "tool_call_id": call["id"], "content": text}

    async def __call__(self) -> Outcome:
        messages: list[dict[str, Any]] = [SYSTEM, USER, PREFILL]
        first = await self.send(
            {"model": self.model, "messages": messages, "tools": self.tools, "tool_choice": "required", **COMMON}
        )
        message = first["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        if calls:
            messages = [*messages, {"role": "assistant", "content": message.get("content"), "tool_calls": calls}]
            messages += await asyncio.gather(*(self._tool(c) for c in calls))
        messages.append({"role": "user", "content": FINAL_ANSWER_PROMPT})
        await self.send({"model": self.model, "messages": messages, **COMMON})
        return len(calls)


def started_engine(stack: contextlib.ExitStack, extra_args: Sequence[str] = ()) -> RealEngine:
    """llama-server (built once per machine by scripts/build-llama-server.sh: about 10 min the first time), with
    `extra_args` after the lane's own (`--ctx-size 2048` wins over the lane's 4096)."""
    try:
        return stack.enter_context(running_engine(extra_args))
    except pytest.fail.Exception as exc:  # the test helpers fail the calling test; here, a plain error
        raise RuntimeError(str(exc)) from None


def own_share_rows(what: str, direct: Way, proxy: Way, bridge: Way) -> list[Row]:
    """The hop's share (the bare proxy, bench/proxy.py: what any Python gateway adds) and the gateway's own:
    its overhead outside the engine's compute over the proxy's, as a share of the engine's compute p50."""
    hop = proxy.outside_ms - direct.outside_ms
    own = bridge.outside_ms - proxy.outside_ms
    share = own / bridge.engine_ms
    return [
        (
            f"{what}, through the bare proxy: p50 / p90; its overhead outside the engine's compute (medians)",
            f"{proxy.p(0.5):.1f} / {proxy.p(0.9):.1f} ms; {hop:+.1f} ms ({hop / proxy.engine_ms:+.2%} of the "
            "engine's compute p50)",
            "report (the hop)",
        ),
        (
            f"{what}: the gateway's own share, its overhead outside the engine's compute over the bare proxy's",
            f"{own:+.1f} ms, {share:+.2%} of the engine's compute p50 ({verdict(share <= OWN_SHARE)})",
            f"<= {OWN_SHARE:.0%} of the engine's compute (issue 35)",
        ),
    ]


def overhead_rows(what: str, direct: Way, bridge: Way, n: int) -> list[Row]:
    plain = bridge.p(0.5) - direct.p(0.5)
    outside = bridge.outside_ms - direct.outside_ms
    return [
        (
            f"{what}, direct to llama-server: p50 / p90",
            f"{direct.p(0.5):.1f} / {direct.p(0.9):.1f} ms (engine compute p50 {direct.engine_ms:.1f} ms)",
            "baseline",
        ),
        (
            f"{what}, through the gateway: p50 / p90",
            f"{bridge.p(0.5):.1f} / {bridge.p(0.9):.1f} ms (engine compute p50 {bridge.engine_ms:.1f} ms)",
            "report",
        ),
        (
            f"{what}: gateway overhead, p50 difference",
            f"{plain:+.1f} ms ({plain / bridge.p(0.5):+.1%} of the gateway's p50)",
            "report (engine noise included)",
        ),
        (
            f"{what}: gateway overhead outside the engine's compute (medians)",
            f"{outside:+.1f} ms ({outside / bridge.p(0.5):+.2%} of the gateway's p50)",
            "report",
        ),
        (
            f"{what}: gateway process CPU per call, through it / idle during a direct call",
            f"{bridge.gateway_cpu_s / n * 1000:.2f} / {direct.gateway_cpu_s / n * 1000:.2f} ms",
            "report",
        ),
    ]


async def run() -> dict[str, object]:
    with contextlib.ExitStack() as sync_stack:
        engine = started_engine(sync_stack)
        async with contextlib.AsyncExitStack() as stack:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-real-engine-")))
            config = write_mcp_config(directory, servers=[SERVER])
            bridge = await stack.enter_async_context(gateway(engine.base_url, config))
            proxy = await stack.enter_async_context(bare_proxy(engine.base_url))
            client = await stack.enter_async_context(http_client())
            session = await stack.enter_async_context(mcp_session(server_params(directory, SERVER)))
            direct_run = DirectRun(client, engine, session)
            await direct_run.setup()

            chat_direct = Way(
                "chat direct", chat_call(client, f"{engine.base_url}/v1/chat/completions", engine.model_id)
            )
            chat_bridge = Way("chat gateway", chat_call(client, bridge.url("/v1/chat/completions"), engine.model_id))
            chat_proxy = Way("chat proxy", chat_call(client, proxy.url("/v1/chat/completions"), engine.model_id))
            run_direct = Way("run direct", direct_run)
            run_bridge = Way("run gateway", gateway_run(client, bridge, engine.model_id))
            for way in (chat_direct, chat_bridge, chat_proxy, run_direct, run_bridge):
                for _ in range(WARMUP):
                    await way.call()
            await measure([chat_direct, chat_bridge, chat_proxy], N_CHAT, client, engine, bridge)
            await measure([run_direct, run_bridge], N_RUN, client, engine, bridge)

    one_call = f"{run_bridge.outcomes.count(1)} / {run_direct.outcomes.count(1)} of {N_RUN}"
    rows: list[Row] = [
        *overhead_rows(f"chat ({CHAT_TOKENS} tokens)", chat_direct, chat_bridge, N_CHAT),
        *own_share_rows(f"chat ({CHAT_TOKENS} tokens)", chat_direct, chat_proxy, chat_bridge),
        *overhead_rows("one-tool run (2 engine calls + 1 tool call)", run_direct, run_bridge, N_RUN),
        ("runs that made exactly one successful tool call: gateway / direct", one_call, f"{N_RUN} / {N_RUN}"),
    ]
    return {
        "title": "Against a real engine (llama-server + SmolLM2-135M)",
        "note": (
            f"llama.cpp's llama-server (tests/real_engine: SmolLM2-135M-Instruct Q4_1, {THREADS} thread, "
            f"{PARALLEL} slots, prompt cache on) on this machine; the gateway as a process (`app.cli serve`, "
            "WARNING logging). **chat**: `POST /v1/chat/completions`, one user message, temperature 0, "
            f"exactly {CHAT_TOKENS} generated tokens. **one-tool run**: `POST /v1/chat/completions` with "
            "`mcp_servers: [time]`, `tool_choice: required`, an assistant prefill `<tool_call>` and "
            f"`stop: [</tool_call>]`, `max_rounds: 1`, `max_tokens: {RUN_TOKENS}`: the forced call, "
            "mcp-server-time's get_current_time, then the final answer without tools; **direct** does the same "
            "two engine calls and the tool call (kept MCP session) by hand. "
            f"{N_CHAT} chats and {N_RUN} runs per way after {WARMUP} warm-up calls, alternating the ways. The "
            "chat also goes through **the bare proxy** (bench/proxy.py: uvicorn and one aiohttp request, no "
            "checks or records), the hop any Python gateway adds: the gateway's own share is what it adds "
            "over that. Engine compute = the growth of llama-server's prompt + generation seconds across the call; "
            "the overhead outside it is the difference of the medians of (latency - engine compute)."
        ),
        "rows": rows,
    }
