"""Per-key limits counted in the shared PostgreSQL store: what a request and a run of a limited key cost over those
of a key without limits, on one gateway on PostgreSQL, in the same run (issue 33)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import Contender, Row, Server, compare, gateway, http_client, mock_lmstudio, warm_up, write_mcp_config
from tests.postgres import PostgresCluster, PostgresNotFound

FREE_KEY = "bench-free-key-0123456789abcdef"
LIMITED_KEY = "bench-limited-key-0123456789abcdef"
HUGE = 1_000_000_000  # limits never reached: every request pays the check, none is refused
REQUESTS_N = 3000
RUNS_N = 1500
WARMUP = 100
BLOCKS = 20
TASK = "Say hello in one short sentence."
COMMAND = ".venv/bin/python -m bench key_limits"
TITLE = "Per-key limits in the shared store"

NOTE = (
    f"`{COMMAND}`. One throwaway PostgreSQL (tests/postgres.py, fsync off), the zero-latency mock LM Studio, one "
    "gateway process on it (`BRIDGE_DATABASE_URL` = the PostgreSQL database: its keys' limits are counted in the "
    "store), a keys file with two keys: `free` (no limits) and `limited` (`requests_per_minute` and "
    f"`max_concurrent_runs` of {HUGE:,}: every request pays the store-side check, none is refused). Per key, "
    f"after {WARMUP} warm-up requests: {REQUESTS_N} `GET /v1/models` (the request check: one upsert of the key's "
    f'token bucket, autocommit) and {RUNS_N} runs (`POST /v1/autonomous`, `"mcp_servers": []`, `"store": false`: '
    "the request check, plus the run's entry (a transaction: the key's advisory lock, the sum over live "
    "processes, this process's row) and its exit (the row written again, in the background)), sequential on one "
    f"keep-alive client, the two keys interleaved in {BLOCKS} blocks. CPU = psutil user+system time around each "
    "block / requests: the gateway process, and PostgreSQL (postmaster and backends)."
)

ANALYSIS = (
    "**What the figures say** (2026-12-07, two runs on the shared 2-core machine while other engineers' "
    "suites ran: the free key's `GET /v1/models` p50 was 4-5 ms against about 1 ms on a quiet machine, so"
    " the latency rows are inflated and only the same-run differences mean something). A limited key's "
    "request costs one round trip to PostgreSQL for its token bucket: +0.6 ms of gateway CPU and +0.4 ms "
    "of PostgreSQL CPU per request, +4 ms p50 here. A limited key's run adds the request check, the run's"
    " entry (a transaction: advisory lock, sum, upsert) and its exit (the same, in the background): +2.0 "
    "ms gateway CPU and +1.3 ms PostgreSQL CPU per run, +10 ms p50 here. The first version sent the "
    "checks through SQLAlchemy: +3.1 ms gateway CPU and +14 ms p50 per request, +7.5 ms CPU and +25 ms "
    "p50 per run in the same kind of run; in-process, one check took 1.0 ms of CPU and 2.1 ms through "
    "SQLAlchemy against 0.13 ms and 0.37 ms as a prepared statement on a small asyncpg pool, which the "
    "checks now use. Keys without limits pay nothing (they never reach the store), and on SQLite the "
    "limits are counted in the process as before. Not measured: the same load over two or three replicas "
    "(the check is the same statement whichever replica sends it; on these 2 cores more replicas add no "
    "throughput, see Gateway replicas on one PostgreSQL)."
)


class _Postgres:
    """The cluster's CPU time as a `Server`-like counter (`name`, `cpu_s`): the postmaster and its backends."""

    name = "postgres"

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}

    def cpu_s(self) -> float:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    self.seen[process.pid] = float(times.user + times.system)
        return sum(self.seen.values())


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = PostgresCluster()
        try:
            await asyncio.to_thread(cluster.start)
        except PostgresNotFound:
            return {"title": TITLE, "note": NOTE, "rows": [("store-side limits", "not run: no PostgreSQL", "report")]}
        stack.callback(cluster.stop)
        url = await asyncio.to_thread(cluster.new_database, "key_limits")
        assert cluster.pid is not None
        postgres = _Postgres(cluster.pid)
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-key-limits-")))
        keys = directory / "keys.json"
        limited = {"name": "limited", "key": LIMITED_KEY, "requests_per_minute": HUGE, "max_concurrent_runs": HUGE}
        keys.write_text(json.dumps({"keys": [{"name": "free", "key": FREE_KEY}, limited]}))
        mock = await stack.enter_async_context(mock_lmstudio())
        client = await stack.enter_async_context(http_client())
        bridge = await stack.enter_async_context(
            gateway(
                mock.base_url,
                write_mcp_config(directory, []),
                name="gateway-key-limits",
                BRIDGE_DATABASE_URL=url,
                BRIDGE_KEYS_FILE=str(keys),
            )
        )
        counted: list[Any] = [bridge, postgres]
        rows: list[Row] = []
        for what, n, call in (
            ("GET /v1/models", REQUESTS_N, _models),
            ('POST /v1/autonomous ("mcp_servers": [], "store": false)', RUNS_N, _run),
        ):
            free = Contender("free key", call(client, bridge, FREE_KEY), counted)
            limited_key = Contender("limited key", call(client, bridge, LIMITED_KEY), counted)
            await warm_up([free, limited_key], WARMUP)
            await compare([free, limited_key], n, BLOCKS)
            rows += _rows(what, free, limited_key, bridge, postgres)
        checks = (await client.get(bridge.url("/metrics"))).text
        rows.append(("store-side checks counted (`bridge_key_limit_checks_total`)", _checks(checks), "report"))
    return {"title": TITLE, "note": NOTE, "rows": rows, "analysis": ANALYSIS}


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _models(client: httpx.AsyncClient, bridge: Server, key: str) -> Any:
    url, headers = bridge.url("/v1/models"), _headers(key)

    async def call() -> Any:
        response = await client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:1000]}")

    return call


def _run(client: httpx.AsyncClient, bridge: Server, key: str) -> Any:
    url, headers = bridge.url("/v1/autonomous"), _headers(key)
    body = {"task": TASK, "mcp_servers": [], "store": False}

    async def call() -> Any:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code != 200 or response.json()["status"] != "completed":
            raise RuntimeError(f"POST {url}: {response.status_code} {response.text[:1000]}")

    return call


def _rows(what: str, free: Contender, limited: Contender, bridge: Server, postgres: _Postgres) -> list[Row]:
    def cpu(c: Contender, s: Any) -> float:
        return c.cpu_s[s.name] / len(c.samples) * 1000

    return [
        (f"{what}: p50 / p99, free key", f"{free.p50:.2f} / {free.p99:.2f} ms", "baseline"),
        (f"{what}: p50 / p99, limited key", f"{limited.p50:.2f} / {limited.p99:.2f} ms", "report"),
        (f"{what}: limited - free, p50", f"{limited.p50 - free.p50:+.2f} ms", "report"),
        (
            f"{what}: CPU per request, gateway; PostgreSQL (free -> limited)",
            f"{cpu(free, bridge):.2f} -> {cpu(limited, bridge):.2f}; {cpu(free, postgres):.3f} -> "
            f"{cpu(limited, postgres):.3f} ms",
            "report",
        ),
    ]


def _checks(metrics: str) -> str:
    found = [line for line in metrics.splitlines() if line.startswith("bridge_key_limit_checks_total{")]
    return "; ".join(found) or "none"
