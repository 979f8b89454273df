"""`make soak` (`python -m bench.soak [--runs N]`): many runs with injected faults against one gateway on SQLite,
then checks that the run store recorded every run with a terminal status and that memory stayed flat.

A real gateway process (`python -m app.cli serve`, logging at WARNING, its store a SQLite file in a temp dir)
over the mock LM Studio and two real MCP servers (`time`, `fault`). `--concurrency` workers share `--runs`
runs, alternating `POST /v1/autonomous` (synchronous) and `POST /v1/runs` (background; the worker follows
`GET /v1/runs/{id}/events` to the terminal event, so at most `--concurrency` runs are in flight). Each run's
task carries a unique tag, so its record is found even when the request ended with a problem document.
Each run is a scripted tool round (the time server's `get_current_time` or the fault server's `echo`), with
a run deadline of `--run-timeout-s`. About `--fault-rate` of the runs get a fault, in turn: a 503 from
LM Studio, a chat request that never answers (cut by the run deadline), malformed JSON from LM Studio (these
three queued with `POST /_mock/faults`, so the next chat request takes them), a tool that fails
(`fault__fail`), and now and then the fault server crashing (`fault__crash`; the gateway restarts it).

Checks: every started run has exactly one record, with a terminal status, and paging `GET /v1/runs` over
everything counts as many records as runs started; no record is left queued, running or awaiting approval;
every background run's event stream ended with a terminal event; the gateway's RSS grew < `--rss-growth`
between the end of the warm-up (a tenth of the runs, at most 500) and the end. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Server, gateway, mock_lmstudio, write_mcp_config
from services.agent import FINISHED_STATUSES
from tests.helpers import TIME_CALL, call, script, sse_events

SERVERS = ["time", "fault"]
CHAT = "/v1/chat/completions"
MOCK_FAULTS: dict[str, dict[str, Any]] = {
    "lmstudio_503": {"kind": "status", "status": 503, "path": CHAT},
    "lmstudio_hang": {"kind": "hang", "path": CHAT},
    "lmstudio_malformed_json": {"kind": "malformed_json", "path": CHAT},
}
TOOL_FAULTS = {
    "tool_error": call("fault__fail", {"message": "soak: injected tool failure"}),
    "tool_server_crash": call("fault__crash", {}),
}
# the faults in turn; a crash every 10th fault (the server restarts with a backoff, runs meanwhile get tool errors)
FAULT_CYCLE = [*["lmstudio_503", "lmstudio_hang", "lmstudio_malformed_json", "tool_error"] * 2, "lmstudio_503"]
CRASH_EVERY = 10
NORMAL_CALLS = [TIME_CALL, call("fault__echo", {"text": "soak"})]
REQUEST_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 120.0
PAGE = 200


@dataclass
class Tally:
    started: set[str] = field(default_factory=set)  # tags of runs the gateway took on
    rejected: Counter[str] = field(default_factory=Counter)  # answers that started no run
    answers: Counter[str] = field(default_factory=Counter)  # "<endpoint> <HTTP status>"
    faults: Counter[str] = field(default_factory=Counter)
    streams_without_end: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # client-side exceptions
    latencies: list[float] = field(default_factory=list)
    done: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in all (default 10000; 500 to try it)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of runs with an injected fault")
    parser.add_argument("--run-timeout-s", type=float, default=3.0, help="each run's deadline (`timeout_s`)")
    parser.add_argument("--rss-growth", type=float, default=0.10, help="largest RSS growth allowed (0.10 = 10 %%)")
    parser.add_argument("--seed", type=int, default=16)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[str | None]:
    """The fault of each run (None: none), spread at random at `fault_rate`, kinds in FAULT_CYCLE order."""
    rng = random.Random(args.seed)
    faults: list[str | None] = []
    count = 0
    for _ in range(args.runs):
        if rng.random() < args.fault_rate:
            count += 1
            faults.append("tool_server_crash" if count % CRASH_EVERY == 0 else FAULT_CYCLE[count % len(FAULT_CYCLE)])
        else:
            faults.append(None)
    return faults


async def main(args: argparse.Namespace) -> int:
    faults = plan(args)
    tally = Tally()
    warm_at = min(500, max(1, args.runs // 10))
    rss: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-soak-")))
        config = write_mcp_config(directory, SERVERS)
        mock = await stack.enter_async_context(mock_lmstudio())
        bridge = await stack.enter_async_context(gateway(mock.base_url, config, name="gateway-soak"))
        limits = httpx.Limits(max_connections=args.concurrency * 2 + 10, keepalive_expiry=2.0)
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits))
        rss["start"] = bridge.rss_mb()
        next_run = 0
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal next_run
            while next_run < args.runs:
                i = next_run
                next_run += 1
                await one_run(client, bridge, mock, i, faults[i], args, tally)
                tally.done += 1
                if tally.done == warm_at:
                    rss["warm"] = bridge.rss_mb()

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - start
        await client.delete(mock.url("/_mock/faults"))
        unfinished = await settle(client, bridge)
        records = await all_records(client, bridge)
        rss["end"] = bridge.rss_mb()
        failures = check(args, tally, records, unfinished, rss)
        report(args, tally, records, rss, wall, failures)
        if failures:
            print("\ngateway log (tail):\n" + bridge.log_tail(), file=sys.stderr)
    return 1 if failures else 0


async def one_run(
    client: httpx.AsyncClient,
    bridge: Server,
    mock: Server,
    i: int,
    fault: str | None,
    args: argparse.Namespace,
    tally: Tally,
) -> None:
    tag = f"soak-{i:06d}"
    tool_call = TOOL_FAULTS.get(fault or "", NORMAL_CALLS[i % len(NORMAL_CALLS)])
    body = {
        "task": f"{tag}: use the tool once. " + script(calls=[[tool_call]]),
        "mcp_servers": SERVERS,
        "timeout_s": args.run_timeout_s,
    }
    if fault:
        tally.faults[fault] += 1
        if fault in MOCK_FAULTS:
            (await client.post(mock.url("/_mock/faults"), json={"faults": [MOCK_FAULTS[fault]]})).raise_for_status()
    background = i % 2 == 1
    endpoint = "POST /v1/runs" if background else "POST /v1/autonomous"
    started = time.perf_counter()
    try:
        response = await client.post(bridge.url("/v1/runs" if background else "/v1/autonomous"), json=body)
        tally.answers[f"{endpoint} {response.status_code}"] += 1
        if response.status_code in (400, 401, 413, 422, 429):  # refused before a run existed
            tally.rejected[f"{endpoint} {response.status_code}: {_code(response)}"] += 1
            return
        tally.started.add(tag)
        if background and response.status_code == 202:
            await follow(client, bridge, response.json()["run_id"], tag, tally)
    except httpx.HTTPError as exc:
        tally.errors[f"{endpoint}: {type(exc).__name__}"] += 1
        tally.started.add(tag)  # it may have started: its record must be there all the same
    finally:
        tally.latencies.append(time.perf_counter() - started)


def _code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("code"))
    return "?"


async def follow(client: httpx.AsyncClient, bridge: Server, run_id: str, tag: str, tally: Tally) -> None:
    """Read the run's event stream to its terminal event."""
    async with client.stream("GET", bridge.url(f"/v1/runs/{run_id}/events")) as response:
        if response.status_code != 200:
            tally.streams_without_end.append(f"{tag}: events answered {response.status_code}")
            return
        async for event, _ in sse_events(response):
            if event in ("run.completed", "run.failed"):
                return
    tally.streams_without_end.append(f"{tag} ({run_id})")


async def settle(client: httpx.AsyncClient, bridge: Server) -> dict[str, int]:
    """Wait until no stored run is queued, running or awaiting approval; what is left after SETTLE_TIMEOUT_S."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        left = {}
        for status in ("queued", "running", "awaiting_approval"):
            page = (await client.get(bridge.url(f"/v1/runs?status={status}&limit=200"))).json()
            if page["data"]:
                left[status] = len(page["data"])
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


async def all_records(client: httpx.AsyncClient, bridge: Server) -> list[dict[str, Any]]:
    """Every stored run, paging GET /v1/runs newest first."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = bridge.url(f"/v1/runs?limit={PAGE}" + (f"&cursor={cursor}" if cursor else ""))
        response = await client.get(url)
        response.raise_for_status()
        page = response.json()
        records += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return records


def check(
    args: argparse.Namespace,
    tally: Tally,
    records: list[dict[str, Any]],
    unfinished: dict[str, int],
    rss: dict[str, float],
) -> list[str]:
    failures = []
    tags = Counter(r["task"].split(":", 1)[0] for r in records)
    missing = tally.started - set(tags)
    doubled = [tag for tag, n in tags.items() if n > 1]
    strangers = set(tags) - tally.started
    if len(records) != len(tally.started):
        failures.append(f"{len(records)} records for {len(tally.started)} runs started")
    if missing:
        failures.append(f"{len(missing)} started run(s) without a record, e.g. {sorted(missing)[:5]}")
    if doubled:
        failures.append(f"{len(doubled)} run(s) recorded more than once, e.g. {doubled[:5]}")
    if strangers:
        failures.append(f"{len(strangers)} record(s) of runs not started by this soak, e.g. {sorted(strangers)[:5]}")
    not_terminal = Counter(r["status"] for r in records if r["status"] not in FINISHED_STATUSES)
    if not_terminal or unfinished:
        failures.append(f"records without a terminal status: {dict(not_terminal) or unfinished}")
    if tally.streams_without_end:
        failures.append(f"{len(tally.streams_without_end)} event stream(s) ended without a terminal event")
    if len(tally.started) + sum(tally.rejected.values()) != args.runs:
        failures.append(f"{len(tally.started)} started + {sum(tally.rejected.values())} refused != {args.runs}")
    growth = rss["end"] / rss["warm"] - 1
    if growth >= args.rss_growth:
        failures.append(f"RSS grew {growth:+.1%} after warm-up (limit {args.rss_growth:.0%})")
    return failures


def report(
    args: argparse.Namespace,
    tally: Tally,
    records: list[dict[str, Any]],
    rss: dict[str, float],
    wall: float,
    failures: list[str],
) -> None:
    ordered = sorted(tally.latencies)

    def p(q: float) -> float:
        return ordered[max(0, int(q * len(ordered) + 0.999999) - 1)] * 1000

    statuses = Counter(r["status"] for r in records)
    incomplete = sum(1 for r in records if r.get("incomplete"))
    summary = {
        "runs": args.runs,
        "concurrency": args.concurrency,
        "wall time": f"{wall:.1f} s ({args.runs / wall:.0f} runs/s)",
        "latency p50 / p99 / max": f"{p(0.5):.0f} / {p(0.99):.0f} / {ordered[-1] * 1000:.0f} ms",
        "faults injected": f"{sum(tally.faults.values())} ({sum(tally.faults.values()) / args.runs:.1%}): "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.faults.items())),
        "HTTP answers": ", ".join(f"{k}: {v}" for k, v in sorted(tally.answers.items())),
        "client errors": dict(tally.errors) or "none",
        "refused before running": dict(tally.rejected) or "none",
        "runs started / records (paging GET /v1/runs)": f"{len(tally.started)} / {len(records)}",
        "record statuses": ", ".join(f"{k} {v}" for k, v in statuses.most_common()),
        "records marked incomplete": incomplete,
        "gateway RSS start / after warm-up / end": f"{rss['start']:.1f} / {rss['warm']:.1f} / {rss['end']:.1f} MB "
        f"({rss['end'] / rss['warm'] - 1:+.1%} after warm-up)",
        "verdict": "PASS" if not failures else "FAIL: " + "; ".join(failures),
    }
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
