"""The context window (issue 28, docs/context.md): runs fitted to 2k, 4k and 8k windows with 2, 15 and 38 tools.

**Fake engine** (bench/window_engine.py, the standard library only): an OpenAI-compatible engine that counts
ceil(characters / 4), refuses with llama.cpp's 400 every request whose prompt plus max_tokens is over its window,
keeps a prompt cache in two slots and answers with llama-server's `timings`; its model reads the task and calls
the real MCP servers' tools through the gateway (a process, `app.cli serve`). Tasks: `time` (one call), `file`
(a 211 KB file read through the real filesystem server, then `bridge__read_output` when the output was cut),
`rounds` (ten calls, then the answer). Tools: 2 (time's get_current_time, filesystem's read_text_file), 15 (time,
filesystem without read_media_file), 38 (every tool of time, filesystem, memory and everything).

**Real engine** (bounded): llama-server with SmolLM2-135M and `-c 2048` (tests/real_engine), behind the recording
proxy that forces one call per request with tools (tests/real_engine/recorder.py `force_a_call`): the same three
cases as tests/real_engine/test_context_runs.py. Re-read tokens are the engine's own `timings.prompt_n`.

Per run: the requests the engine refused (target 0), the ending, tokens sent per request (the engine's count of
each prompt), tokens re-read per request, and how many requests that continue the previous one (same tools, its
messages at the start) re-read only their new tokens. The counting cost is the gateway's estimate
(`TokenCounter.estimate`, services/context/tokens.py) of each request the fake engine got, timed in this process.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Row, gateway, http_client, serve
from bench.real_engine import started_engine
from services.context import TokenCounter
from tests.helpers import mcp_servers_json
from tests.real_engine.recorder import Exchange, Reuse, force_a_call, prompt_reuse, recording_proxy

WINDOWS = {"fake-2k": 2048, "fake-4k": 4096, "fake-8k": 8192}
TOOLSETS = {
    2: ["time1", "fs1"],
    15: ["time", "fs13"],
    38: ["time", "filesystem", "memory", "everything"],
}
TASKS = {
    "time": "time: what time is it in UTC?",
    "file": "file {path}: tell me its last line",
    "rounds": "rounds 10: ask the clock ten times",
}
FILE_LINES = 2400  # 88 characters a line: 211,200 bytes
REAL_WINDOW = 2048
ESTIMATE_REPEATS = 200


def file_text() -> str:
    return "".join(
        f"line {i:05d}: the quick brown fox jumps over the lazy dog while measuring context windows\n"
        for i in range(FILE_LINES)
    )


def write_config(directory: Path) -> Path:
    """The four reference servers, and the subsets the tool counts need (allowedTools / disabledTools)."""
    servers = mcp_servers_json(str(directory))["mcpServers"]
    del servers["fault"]
    servers["time1"] = {**servers["time"], "allowedTools": ["get_current_time"]}
    servers["fs1"] = {**servers["filesystem"], "allowedTools": ["read_text_file"]}
    servers["fs13"] = {**servers["filesystem"], "disabledTools": ["read_media_file"]}
    path = directory / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def exchanges_of(records: list[dict[str, Any]]) -> list[Exchange]:
    """The fake engine's records as the recording proxy's exchanges (for prompt_reuse)."""
    return [
        Exchange(
            r["body"],
            r["status"],
            {
                "usage": {"prompt_tokens": r["prompt_tokens"]},
                "timings": {"prompt_n": r["prompt_n"], "cache_n": r["cache_n"]},
            },
        )
        for r in records
    ]


def summary(exchanges: list[Exchange]) -> dict[str, Any]:
    answered = [e for e in exchanges if e.status == 200]
    reuse = prompt_reuse(answered)
    continued = [r for r in reuse if r.kind == "continued"]
    return {
        "refused": sum(1 for e in exchanges if e.status != 200),
        "requests": len(exchanges),
        "sent": statistics.mean(r.prompt_tokens for r in reuse) if reuse else 0.0,
        "read": statistics.mean(r.processed for r in reuse) if reuse else 0.0,
        "continued": len(continued),
        "only_new": sum(1 for r in continued if r.only_new),
        "read_continued": statistics.mean(r.processed for r in continued) if continued else 0.0,
        "added_continued": statistics.mean(r.added for r in continued) if continued else 0.0,
        "compacted": sum(1 for r in reuse if r.kind == "compacted"),
        "reuse": reuse,
    }


def run_row(label: str, status: str, found: dict[str, Any], fits: Counter[str]) -> Row:
    actions = ", ".join(f"{action} {n}" for action, n in sorted(fits.items())) or "none"
    value = (
        f"{status}; refused {found['refused']}; {found['requests']} requests; sent {found['sent']:.0f} tok/request; "
        f"re-read {found['read']:.0f} tok/request; continuing requests re-reading only their new tokens: "
        f"{found['only_new']}/{found['continued']} (re-read {found['read_continued']:.0f} of "
        f"+{found['added_continued']:.0f} added); fitted: {actions}"
    )
    return (label, value, "refused 0; an honest end")


def estimate_us(bodies: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """µs the gateway's estimate of each request takes (median of ESTIMATE_REPEATS): (a new counter, which counts
    the tools; the same counter again, which remembers the tool list's size as a run's later rounds do)."""
    found = []
    perf = time.perf_counter
    for body in bodies:
        messages, tools = body["messages"], body.get("tools") or []
        cold, warm = [], []
        for _ in range(ESTIMATE_REPEATS):
            counter = TokenCounter()
            start = perf()
            counter.estimate("m", messages, tools)
            middle = perf()
            counter.estimate("m", messages, tools)
            cold.append(middle - start)
            warm.append(perf() - middle)
        found.append((statistics.median(cold) * 1e6, statistics.median(warm) * 1e6))
    return found


@dataclass
class Totals:
    """Over every fake-engine run."""

    runs: int = 0
    honest: int = 0
    refused: int = 0
    only_new: int = 0
    continued: int = 0
    estimates: list[tuple[float, float]] = field(default_factory=list)
    dishonest: list[str] = field(default_factory=list)  # the runs without an honest end, and why


async def fake_engine_rows(directory: Path, config: Path) -> tuple[list[Row], Totals]:
    rows: list[Row] = []
    totals = Totals()
    honest = {"completed", "max_rounds", "loop", "length"}
    async with contextlib.AsyncExitStack() as stack:
        engine = await stack.enter_async_context(serve("window-engine", "bench.window_engine", health="/v1/models"))
        client = await stack.enter_async_context(http_client())
        for model, window in WINDOWS.items():
            env = {"DEFAULT_MODEL": model}  # the window: the listing's meta.n_ctx
            bridge = await stack.enter_async_context(gateway(engine.base_url, config, f"gateway-{model}", **env))
            for task, text in TASKS.items():
                for count, servers in TOOLSETS.items():
                    await client.post(engine.url("/_requests/reset"))
                    body = {
                        "task": text.format(path=directory / "report.txt"),
                        "mcp_servers": servers,
                        "model": model,
                        "max_rounds": 12,
                    }
                    response = await client.post(bridge.url("/v1/autonomous"), json=body)
                    result = response.json()
                    status = result.get("status", f"HTTP {response.status_code} {result.get('code')}")
                    records = (await client.get(engine.url("/_requests"))).json()
                    found = summary(exchanges_of(records))
                    fits = Counter(f["action"] for f in result.get("context") or [])
                    rows.append(run_row(f"fake engine: {task}, {count} tools, {window // 1024}k", status, found, fits))
                    totals.runs += 1
                    totals.honest += status in honest
                    if status not in honest:
                        why = "; ".join(result.get("warnings") or []) or str(result.get("detail"))
                        totals.dishonest.append(f"{task}, {count} tools, {window // 1024}k: {status} ({why[:240]})")
                    totals.refused += found["refused"]
                    totals.only_new += found["only_new"]
                    totals.continued += found["continued"]
                    totals.estimates += estimate_us([r["body"] for r in records])
    return rows, totals


async def real_engine_rows(directory: Path, config: Path) -> list[Row]:
    """The bounded real-engine set: the three cases of tests/real_engine/test_context_runs.py."""
    cases = [
        ("all four servers, 'What time is it in Tokyo?'", {"task": "What time is it in Tokyo?", "max_rounds": 2}),
        (
            "a 211 KB file through the filesystem server",
            {
                "task": f"Read the file {directory / 'report.txt'} and tell me its last line.",
                "mcp_servers": ["filesystem"],
                "max_rounds": 3,
            },
        ),
        (
            "ten rounds of the time server",
            {"task": "What time is it in Paris?", "mcp_servers": ["time"], "max_rounds": 10},
        ),
    ]
    rows: list[Row] = []
    with contextlib.ExitStack() as sync_stack:
        engine = started_engine(sync_stack, ["--ctx-size", str(REAL_WINDOW)])
        async with contextlib.AsyncExitStack() as stack:
            url, recorder = await stack.enter_async_context(recording_proxy(engine.base_url, force_a_call))
            env = {"BRIDGE_REPEAT_CALL_LIMIT": "100"}  # the window: llama-server's listing
            env["BRIDGE_RUN_TIMEOUT_S"] = "900"
            bridge = await stack.enter_async_context(gateway(url, config, "gateway-real", **env))
            async with httpx.AsyncClient(timeout=1000) as client:
                for label, body in cases:
                    recorder.exchanges.clear()
                    started = time.perf_counter()
                    response = await client.post(bridge.url("/v1/autonomous"), json={"temperature": 0, **body})
                    seconds = time.perf_counter() - started
                    result = response.json()
                    status = result.get("status", f"HTTP {response.status_code} {result.get('code')}")
                    found = summary(list(recorder.exchanges))
                    fits = Counter(f["action"] for f in result.get("context") or [])
                    row = run_row(f"llama-server -c {REAL_WINDOW}: {label}", status, found, fits)
                    rows.append((row[0], f"{row[1]}; {seconds:.0f} s; {requests_line(found['reuse'])}", row[2]))
    return rows


def percentiles(ordered: list[float]) -> str:
    return f"{statistics.median(ordered):.0f} / {ordered[int(0.99 * (len(ordered) - 1))]:.0f} / {ordered[-1]:.0f}"


def requests_line(reuse: list[Reuse]) -> str:
    """Each request as `kind prompt/read`, e.g. `continued 674/101`."""
    return "requests (kind prompt/read): " + ", ".join(f"{r.kind} {r.prompt_tokens}/{r.processed}" for r in reuse)


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-context-") as name:
        directory = Path(name)
        (directory / "report.txt").write_text(file_text())
        config = write_config(directory)
        fake_rows, totals = await fake_engine_rows(directory, config)
        real_rows = await real_engine_rows(directory, config)
    cold = sorted(c for c, _ in totals.estimates)
    warm = sorted(w for _, w in totals.estimates)
    rows: list[Row] = [
        ("fake engine: requests refused (all runs)", str(totals.refused), "0"),
        ("fake engine: runs with an honest end", f"{totals.honest} / {totals.runs}", f"all {totals.runs}"),
        (
            "fake engine: continuing requests that re-read only their new tokens",
            f"{totals.only_new} / {totals.continued}",
            "all",
        ),
        (
            "counting cost: the estimate of one request (`TokenCounter.estimate`), median / p99 / max",
            f"{percentiles(cold)} µs counting its tools, {percentiles(warm)} µs with the tool list's size "
            f"remembered (a run's later rounds); {len(cold)} requests",
            "report",
        ),
        *fake_rows,
        *real_rows,
    ]
    analysis = "Every request the fake engine refused would be a gateway bug: the gateway knew the window."
    if totals.dishonest:
        analysis += " Runs without an honest end: " + "; ".join(totals.dishonest) + "."
    return {
        "analysis": analysis,
        "title": "The context window (2k / 4k / 8k; 2 / 15 / 38 tools; a fake engine and llama-server)",
        "note": __doc__.split("\n\n", 1)[1].replace("\n", " ") if __doc__ else "",
        "rows": rows,
    }
