"""Soak: 600 runs, 16 at a time, against a real gateway process, with bursts of LM Studio 503s and the
MCP server killed now and then. Every request must get a defined answer in time, >= 90 % must complete,
the gateway's RSS must not grow by 10 % between the first and the last 100 runs, and nothing may be left
running afterwards. The figures are printed (`pytest -s`) and recorded in docs/reliability.md."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import call, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.scenarios.conftest import PROBLEM_JSON, GatewayProcess, chat_fault, gateway_process

RUNS = 600
CONCURRENCY = 16
BURST_EVERY = 50  # runs between bursts of LM Studio 503s
BURST = 6
KILL_EVERY = 150  # runs between kills of the MCP server
REQUEST_TIMEOUT_S = 30.0
MIN_COMPLETED = 0.90
MAX_RSS_GROWTH = 0.10
RSS_WINDOW = 100

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Outcome:
    index: int
    kind: str  # "completed" | another run status | "problem:<code>" | "undefined: ..."
    seconds: float
    tool_error: bool = False
    detail: str = ""


def classify(index: int, response: httpx.Response, seconds: float) -> Outcome:
    """What the answer was; anything but a run result or a problem document is `undefined`."""
    content_type = response.headers.get("content-type", "")
    if response.status_code == 200 and content_type.startswith("application/json"):
        result = response.json()
        tool_error = any(step["is_error"] for step in result["steps"])
        return Outcome(index, str(result["status"]), seconds, tool_error)
    if content_type.startswith(PROBLEM_JSON):
        problem = response.json()
        return Outcome(index, f"problem:{problem['code']}", seconds, detail=problem["detail"])
    return Outcome(index, f"undefined: {response.status_code} {response.text[:200]}", seconds)


async def kill_mcp_server(gw: GatewayProcess) -> bool:
    """Kill the fault server (pid from its own `pid` tool); False when it could not be reached."""
    response = await gw.client.post("/v1/mcp/servers/fault/tools/pid", json={})
    if response.status_code != 200:
        return False
    gw.note_children()
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(int(response.json()["content"][0]["text"])).kill()
    return True


async def test_soak(mock: MockLMStudio, scenario_mcp_json: Path) -> None:
    env = {"LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": str(scenario_mcp_json)}
    outcomes: list[Outcome] = []
    rss: dict[str, int] = {}
    kills = 0
    started = time.monotonic()
    async with gateway_process(env) as gw:
        indexes = itertools.count()

        async def one_run(i: int) -> Outcome:
            task = f"soak {i} " + script(calls=[[call("fault__echo", {"text": f"run {i}"})]])
            began = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    gw.client.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"]}),
                    REQUEST_TIMEOUT_S,
                )
            except (TimeoutError, httpx.HTTPError) as exc:
                return Outcome(i, f"undefined: no answer ({exc!r})", time.monotonic() - began)
            return classify(i, response, time.monotonic() - began)

        async def worker() -> None:
            nonlocal kills
            while (i := next(indexes)) < RUNS:
                if i % BURST_EVERY == BURST_EVERY // 2:
                    await mock.faults(*[chat_fault("status", status=503)] * BURST)
                if i % KILL_EVERY == KILL_EVERY // 2:
                    kills += await kill_mcp_server(gw)
                outcomes.append(await one_run(i))
                if len(outcomes) == RSS_WINDOW:
                    rss["first"] = gw.rss()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        rss["last"] = gw.rss()
        assert await gw.sigterm() == 0, gw.log_tail()
    elapsed = time.monotonic() - started

    kinds = collections.Counter(o.kind for o in outcomes)
    seconds = sorted(o.seconds for o in outcomes)
    growth = rss["last"] / rss["first"] - 1
    print(
        f"\nsoak: {len(outcomes)} runs in {elapsed:.1f} s, outcomes {dict(kinds)}, "
        f"runs with a tool error step {sum(o.tool_error for o in outcomes)}, MCP server kills {kills}, "
        f"latency p50 {statistics.median(seconds) * 1000:.0f} ms p99 {seconds[int(len(seconds) * 0.99)] * 1000:.0f} ms "
        f"max {seconds[-1] * 1000:.0f} ms, RSS after the first {RSS_WINDOW} runs {rss['first'] / 2**20:.1f} MiB, "
        f"at the end {rss['last'] / 2**20:.1f} MiB ({growth:+.1%})"
    )
    details = {o.kind: o.detail for o in sorted(outcomes, key=lambda o: o.index) if o.detail}
    assert len(outcomes) == RUNS
    assert not [o for o in outcomes if o.kind.startswith("undefined")], kinds
    assert kinds["completed"] >= MIN_COMPLETED * RUNS, (kinds, details)
    assert growth < MAX_RSS_GROWTH, rss
    assert kills == len(range(KILL_EVERY // 2, RUNS, KILL_EVERY)), kills
