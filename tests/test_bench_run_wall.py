"""bench/run_wall.py (`python -m bench.run_wall`, docs/performance.md "Issue 35, seventh session"): the timed
gateway (`python -m bench.run_wall serve`) reports every measured run's request, hops and MCP call, and the
script its hops."""

from __future__ import annotations

import statistics

from bench import run_wall
from bench.common import BLOCKS

RUNS = 2 * BLOCKS


async def test_each_measured_run_is_timed_in_the_gateway_and_in_the_script() -> None:
    measured = await run_wall.measure(RUNS, warmup=3)
    wall, timers = measured["gateway"]
    assert len(wall) == RUNS
    assert {key: len(values) for key, values in timers.items()} == {
        "request": RUNS,
        "endpoint": RUNS,
        "open": RUNS,
        "execute": RUNS,
        "chat": 2 * RUNS,
        "tool": RUNS,
        "sdk": RUNS,
    }
    # the gateway's view of a run is inside the client's, but for the middleware's own last steps after the
    # answer is sent, so runs are compared as a whole, not one by one
    assert all(request > 0 for request in timers["request"])
    assert statistics.median(timers["request"]) < statistics.median(wall)
    for tool, sdk in zip(timers["tool"], timers["sdk"], strict=True):
        assert 0 < sdk < tool  # the SDK's call inside the pool's
    for request, endpoint, opened, executed in zip(
        timers["request"], timers["endpoint"], timers["open"], timers["execute"], strict=True
    ):
        assert 0 < opened + executed < endpoint < request  # the set-up and the run inside the route's work
    wall, timers = measured["script"]
    assert len(wall) == RUNS
    assert {key: len(values) for key, values in timers.items()} == {"chat": 2 * RUNS, "tool": RUNS}
