"""Where a run's wall time goes, in the gateway and in the hand-written script: the LM Studio hops, the MCP call,
and the rest (the run's own work; for the gateway also reading the request and writing the answer).

Not a section of `make bench`: it takes apart a row of bench/run_upstreams.py (the run's p50 over the
script's). The gateway runs as ``python -m bench.run_wall serve``: the gateway's own `serve` with timers around
`RequestContextMiddleware.__call__` (the whole request, answer sent), `LMStudioClient.chat` (one hop),
`MCPPool.call_tool` (the pool's call) and the MCP SDK's `ClientSession.call_tool` under it; it writes them to
the file named by RUN_WALL_OUT when it stops. The script is bench/autonomous.py's `Script` with timers
around its hops. Both on the mock LM Studio and the real mcp-server-time, sequential runs after a warm-up,
interleaved in blocks.

Run: ``.venv/bin/python -m bench.run_wall [--runs 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench.autonomous import Script
from bench.common import (
    BLOCKS,
    gateway,
    http_client,
    mcp_session,
    mock_lmstudio,
    post_json,
    server_params,
    write_mcp_config,
)
from bench.run_upstreams import QUESTION, SERVER
from tests.helpers import TIME_CALL, script

MODEL = "qwen/qwen3-4b"  # the mock's
TASK = f"{QUESTION} " + script(calls=[[TIME_CALL]])
WARMUP = 100
OUT_ENV = "RUN_WALL_OUT"

Timers = dict[str, list[float]]


@contextlib.contextmanager
def clocked(into: list[float]) -> Iterator[None]:
    """Append the block's wall time to `into`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into.append(time.perf_counter() - started)


def timed(owner: object, name: str, key: str, timers: Timers, when: Callable[..., bool] | None = None) -> None:
    """Wrap the coroutine function `owner.name` (a class's method or a module's function, looked up when
    called; in the timed gateway's process only): the wall time of each call for which `when(*args)` holds is
    appended to timers[key]."""
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when is not None and not when(*args):
            return await original(*args, **kwargs)
        with clocked(timers[key]):
            return await original(*args, **kwargs)

    setattr(owner, name, wrapper)


def serve() -> int:
    """`python -m app.cli serve ...` with the timers; they go to RUN_WALL_OUT (JSON) when it stops."""
    from mcp.client.session import ClientSession

    from app import cli, telemetry
    from routers import autonomous
    from services.agent.run import Run
    from services.agent.service import AgentService
    from services.lmstudio.client import LMStudioClient
    from services.mcp.pool import MCPPool

    timers: Timers = defaultdict(list)
    timed(telemetry.RequestContextMiddleware, "__call__", "request", timers, when=_a_run)
    timed(autonomous, "_respond", "endpoint", timers)  # the route's work, once FastAPI has read the body
    timed(AgentService, "open", "open", timers)  # the run's set-up
    timed(Run, "execute", "execute", timers)
    timed(LMStudioClient, "chat", "chat", timers)
    timed(MCPPool, "call_tool", "tool", timers)
    timed(ClientSession, "call_tool", "sdk", timers)
    try:
        return cli.main(sys.argv[1:])
    finally:
        Path(os.environ[OUT_ENV]).write_text(json.dumps(timers))


def _a_run(_middleware: object, scope: dict[str, Any], *_: object) -> bool:
    """A `POST /v1/autonomous` (not the lifespan, not `/healthz`)."""
    return bool(scope["type"] == "http" and scope["path"] == "/v1/autonomous")


class TimedScript(Script):
    """bench/autonomous.py's script, each hop's wall time kept in `timers`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timers: Timers = defaultdict(list)

    async def _chat(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        with clocked(self.timers["chat"]):
            return await super()._chat(messages)

    async def _tool(self, call: dict[str, Any]) -> dict[str, Any]:
        with clocked(self.timers["tool"]):
            return await super()._tool(call)


async def measure(runs: int, warmup: int = WARMUP) -> dict[str, tuple[list[float], Timers]]:
    """Per contender ("gateway", "script"): each measured run's wall time as the client saw it, and the timers
    of those runs."""
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-run-wall-")))
        config = write_mcp_config(directory, [SERVER])
        out = directory / "timers.json"
        mock = await stack.enter_async_context(mock_lmstudio())
        bridge = await stack.enter_async_context(
            gateway(mock.base_url, config, module="bench.run_wall", BRIDGE_LOG_LEVEL="INFO", **{OUT_ENV: str(out)})
        )
        client = await stack.enter_async_context(http_client())
        session = await stack.enter_async_context(mcp_session(server_params(directory, SERVER)))
        hand = TimedScript(client, mock, session, server=SERVER, model=MODEL, prompt=TASK)
        await hand.setup()
        calls = {
            "gateway": post_json(client, bridge.url("/v1/autonomous"), {"task": TASK, "mcp_servers": [SERVER]}),
            "script": hand.run,
        }
        walls: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            for _ in range(warmup):
                await call()
        hand.timers.clear()
        for block in range(BLOCKS):
            for name in calls if block % 2 == 0 else reversed(calls):
                for _ in range(runs // BLOCKS):
                    with clocked(walls[name]):
                        await calls[name]()
        await bridge.stop()
        gateway_timers: Timers = json.loads(out.read_text())
    measured = len(walls["gateway"])  # the gateway's timers hold the warm-up first: the tail is the measured runs
    gateway_timers = {key: values[-measured * (2 if key == "chat" else 1) :] for key, values in gateway_timers.items()}
    return {"gateway": (walls["gateway"], gateway_timers), "script": (walls["script"], hand.timers)}


def _report(name: str, wall: list[float], timers: Timers) -> None:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.2f} / {statistics.fmean(values) * 1000:.2f}"

    whole = timers.get("request", wall)  # the gateway's own view of the run; the script's is the run
    print(f"{name}: run as the client sees it {ms(wall)}")
    if "request" in timers:
        print(f"  in the gateway (request read to answer sent) {ms(whole)}")
    print(f"  one LM Studio hop {ms(timers['chat'])} (two per run)")
    print(
        f"  the MCP call {ms(timers['tool'])}"
        + (f", the SDK's call_tool in it {ms(timers['sdk'])}" if "sdk" in timers else "")
    )
    mean = {key: statistics.fmean(values) * 1000 for key, values in timers.items()}
    hops = 2 * mean["chat"] + mean["tool"]
    print(f"  the rest (mean): {statistics.fmean(whole) * 1000 - hops:.2f}")
    if "endpoint" in mean:
        framework = mean["request"] - mean["endpoint"]
        print(f"    the framework (middleware, FastAPI, the body read and validated): {framework:.2f}")
        print(f"    the run's set-up (`AgentService.open`): {mean['open']:.2f}")
        print(f"    the run's own work (`Run.execute` outside the hops): {mean['execute'] - hops:.2f}")
        print(
            f"    the answer (the result's JSON, the response): {mean['endpoint'] - mean['open'] - mean['execute']:.2f}"
        )


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve())
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    measured = asyncio.run(measure(parser.parse_args().runs))
    print(f"{len(measured['gateway'][0])} runs each, interleaved in {BLOCKS} blocks; ms, p50 / mean")
    for name, (wall, timers) in measured.items():
        _report(name, wall, timers)


if __name__ == "__main__":
    main()
