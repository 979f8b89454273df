"""Gateway replicas on one PostgreSQL: runs/s with ONE, TWO and THREE gateway processes (distinct
BRIDGE_INSTANCE_ID, the same run store), the zero-latency mock LM Studio upstream, a concurrent load generator in
this process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import psutil
from httpx_aiohttp import AiohttpTransport

from bench.common import Row, Server, gateway, mock_lmstudio, verdict, write_mcp_config
from tests.postgres import PostgresCluster, PostgresNotFound

CONCURRENCY = 16
WARMUP = 300  # runs through each gateway before anything is measured
COUNTS = (1, 2, 3)  # gateway replicas per configuration
LABELS = {1: "one replica", 2: "two replicas", 3: "three replicas"}
ROUNDS = 6  # each round measures every configuration, in the orders 123 231 312 321 132 213 (see _order)
RUNS_PER_ROUND = 1500  # per configuration and round
DATABASE = "replicas"
TASK = "Say hello in one short sentence."
SETTLE_TIMEOUT_S = 30.0
POLL_S = 0.02
T = TypeVar("T")
COMMAND = ".venv/bin/python -m bench replicas"
INSTANCES = ("bench-replica-a", "bench-replica-b", "bench-replica-c")

NOTE = (
    f"`{COMMAND}`. One throwaway PostgreSQL (tests/postgres.py: initdb on a temp dir, fsync off), the "
    "zero-latency mock LM Studio, and three gateway processes A, B, C (`python -m app.cli serve`, default "
    "settings (logging at INFO, the run store on), `BRIDGE_DATABASE_URL` = the same PostgreSQL database, "
    f"`BRIDGE_INSTANCE_ID` {', '.join(INSTANCES)}, no MCP servers configured), all up in every round. The load: "
    f'`POST /v1/autonomous` with `"mcp_servers": []` and a short task (one LLM call, no tool; recorded in the '
    f"store), {CONCURRENCY} concurrent workers on one httpx.AsyncClient in the benchmark process (over "
    "httpx-aiohttp's "
    "transport, as the gateway talks to LM Studio: about 0.4 ms of CPU per request here, against about 1.3 ms "
    "with httpx's own, CPU that the servers would lose on 2 cores). "
    "**One replica**: every run to gateway A (B and C are up but get nothing: their CPU over those rounds is "
    "shown); **two replicas**: the runs round-robin over A and B; **three replicas**: over A, B and C. After "
    f"{WARMUP} warm-up runs through each gateway, {ROUNDS} rounds of {RUNS_PER_ROUND:,} runs per configuration, "
    "each round measuring all three in the orders (by replica count) 123 231 312 321 132 213 (each configuration "
    "first, second and third, and after each other one, equally often), so that drift on the shared machine hits "
    "all alike. runs/s = runs / wall time of "
    "the configuration's rounds; latency = each request's time under that load (queueing included). CPU "
    "per run = psutil user+system time over a round / runs, read once every run of the round is in the "
    "store (the table polled), so that the store's batched writes are counted: gateways (the processes "
    "only, no children), the mock, PostgreSQL (postmaster and backends), the load generator (this process)."
)


ANALYSIS = (
    "**What the figures say** (2026-12-07, three runs of this section, 27,000 runs each, 0 errors in each; the "
    "table is the first, the one with the least other load): on this 2-core machine neither a second nor a third "
    "replica added runs/s, and each cost CPU. Runs/s with one / two / three replicas: 295 / 246 / 197, 127 / 105 "
    "/ 91 and 147 / 109 / 110 (two / one 0.84, 0.83, 0.74x; three / one 0.67, 0.72, 0.74x; three / two 0.80, "
    "0.87, 1.01x). **What else ran**: all three runs shared the machine with other engineers' work at normal "
    'priority: two `python3 -c "while True: pass"` loops (started from /work/main, running through all three '
    "runs) and repeated test runs (tests/scenarios/test_failures.py -k breaker, "
    "tests/services/runs/test_store.py -k cancelled_just), besides niced test suites, mypy and pip in other "
    'worktrees; load average 5-11. The "everything else" rows: 1.1-1.2 cores in the first run, 1.4-1.55 in the '
    "other two, which left our processes 0.83-0.90 of a core in the first and 0.45-0.57 in the others. These "
    "runs/s are far below the quieter 2026-11-29 ones (one replica 492-585 runs/s) and compare only within a "
    "run. **Why no gain**: runs/s is about the cores our processes got / CPU per run (first run, three replicas: "
    "0.88 cores / 4.51 ms = 195 against 197 measured). More gateway processes won a little more of the shared "
    "machine (the gateways together, one -> two -> three replicas: 0.54 -> 0.59 -> 0.60 of a core in the first "
    "run, 0.29 -> 0.33 -> 0.34 and 0.32 -> 0.32 -> 0.38 in the others), far less than their CPU per run grew "
    "(below), and on 2 cores there is no idle core for another process to fill. **What a third replica costs**: "
    "CPU per run, all of it, one -> two -> three replicas: 2.84 -> 3.69 -> 4.51 ms, 3.60 -> 4.93 -> 5.68, 3.45 "
    "-> 4.67 -> 5.20: the third adds 0.5-0.8 ms/run (+11-22 %) over two, and three cost 1.7-2.1 ms/run (+51-59 "
    "%) more than one. Most of it is the gateways' (first run: 1.81 -> 2.41 -> 3.06 ms/run; 1.0 ms per replica "
    "with three, 1.2 with two, 1.8 for one alone): each process's fixed costs are spread over fewer runs (each "
    "event-loop wake-up serves fewer requests; each store writer commits smaller batches: PostgreSQL 0.16 -> "
    "0.25 -> 0.32 ms/run); the mock (0.26 -> 0.37) and the load generator (0.62 -> 0.75) keep one connection "
    "pool per gateway. A replica that gets no runs costs 0.02-0.04 ms per run of the others (its background "
    "work, the lease heartbeat among it: ~4-6 ms of CPU a second). Latency rose with the replicas (first run p50 "
    "40 -> 56 -> 71 ms, p99 260 -> 257 -> 343 ms; the other runs p50 88-108 -> 123-138 -> 128-160 ms). "
    "Contention itself inflates CPU per run (one gateway 1.8-2.3 ms/run here against 1.4-1.5 on 2026-11-29), so "
    "on a quiet machine the third replica's cost in ms is likely smaller, its sign not. **One vs two with less "
    "other load** (2026-11-29, nine runs of the earlier one-vs-two version of this section): two / one "
    "0.88-1.11x in the six quieter runs (one replica 492-585 runs/s), 0.76-0.83x while other suites held most of "
    "the machine; CPU per run 2.2-2.3 ms with one replica, 2.4-2.65 with two; one gateway used 0.7-0.8 of its "
    "core. From those figures the most a quiet 2-core machine could show: one replica stops at its own core (~1 "
    "/ 1.45 ms = ~690 runs/s), two at 2 cores / ~2.5 ms = ~800 runs/s (~1.15x); a third adds CPU per run and no "
    "core, so it can only lower that. Replicas scale where each gets its own cores (a machine each, or 4+ "
    "cores); on this one their gain is availability (any replica serves and reads every run, and the others "
    "carry on when one is killed: tests/scenarios/test_chaos.py), not runs/s."
)


@dataclass
class Config:
    label: str
    targets: list[Server]
    samples: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    runs: int = 0
    errors: list[str] = field(default_factory=list)
    round_rates: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_s: float = 0.0  # every CPU's non-idle time, whoever used it
    window_s: float = 0.0  # wall time over which the CPU times were read (the load, then the settling)

    def p(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    @property
    def rate(self) -> float:
        return self.runs / self.elapsed_s

    def cpu_ms(self, what: str) -> float:
        return self.cpu_s.get(what, 0.0) / self.runs * 1000


class Postgres:
    """CPU time of the cluster's processes: the postmaster and its backends (pids come and go: summed per pid)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}

    def cpu_s(self) -> float:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    self.seen[process.pid] = float(times.user + times.system)
        return sum(self.seen.values())  # exited backends keep their last reading


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = PostgresCluster()
        try:
            await asyncio.to_thread(cluster.start)
        except PostgresNotFound:
            return {
                "title": "Gateway replicas on one PostgreSQL",
                "note": NOTE,
                "rows": [("one, two and three gateway replicas", "not run: PostgreSQL is not installed", "report")],
                "analysis": "",
            }
        stack.callback(cluster.stop)
        url = await asyncio.to_thread(cluster.new_database, DATABASE)
        assert cluster.pid is not None
        postgres = Postgres(cluster.pid)
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-replicas-")))
        config = write_mcp_config(directory, [])
        mock = await stack.enter_async_context(mock_lmstudio())
        replicas = []
        for instance in INSTANCES:  # one after the other: the first one migrates the empty database
            replicas.append(
                await stack.enter_async_context(
                    gateway(
                        mock.base_url,
                        config,
                        name=f"gateway-{instance}",
                        BRIDGE_DATABASE_URL=url,
                        BRIDGE_INSTANCE_ID=instance,
                        BRIDGE_LOG_LEVEL="INFO",
                    )
                )
            )
        client = await stack.enter_async_context(_load_client())
        db = await asyncpg.connect(cluster.dsn_for(DATABASE))
        stack.push_async_callback(db.close)

        for bridge, other in zip(replicas, replicas[1:] + replicas[:1], strict=True):
            await _check(client, bridge, other)
        configs = [Config(LABELS[n], replicas[:n]) for n in COUNTS]
        for bridge in replicas:
            await _load(client, [bridge], WARMUP, None)
        stored = await _settle(db, len(replicas) * (1 + WARMUP))  # the checks' runs and the warm-up's
        processes: dict[str, Server | Postgres | None] = {s.name: s for s in replicas}
        processes |= {"mock": mock, "postgres": postgres, "load generator": None}
        for r in range(ROUNDS):
            for cfg in _order(configs, r):
                before = _cpu(processes)
                machine = _machine_busy_s()
                start = time.perf_counter()
                await _load(client, cfg.targets, RUNS_PER_ROUND, cfg)
                elapsed = time.perf_counter() - start
                stored = await _settle(db, stored + RUNS_PER_ROUND)
                after = _cpu(processes)
                cfg.machine_busy_s += _machine_busy_s() - machine
                cfg.window_s += time.perf_counter() - start
                cfg.elapsed_s += elapsed
                cfg.runs += RUNS_PER_ROUND
                cfg.round_rates.append(RUNS_PER_ROUND / elapsed)
                for name in processes:
                    cfg.cpu_s[name] = cfg.cpu_s.get(name, 0.0) + after[name] - before[name]
        by_instance = dict(await db.fetch("SELECT instance, count(*) FROM runs GROUP BY instance"))
        lost = [s.name for s in replicas if s.process.returncode is not None]
        if lost:
            raise RuntimeError(f"gateway(s) {lost} exited during the benchmark")
    return {
        "title": "Gateway replicas on one PostgreSQL",
        "note": NOTE,
        "rows": _rows(configs, replicas, by_instance),
        "analysis": ANALYSIS,
    }


def _order(configs: list[T], r: int) -> list[T]:
    """Round r's order: the configurations rotated by r, and reversed in every other block of len(configs)
    rounds (for three: 123 231 312 321 132 213), so that each comes at each place and after each other one
    equally often over 2 * len(configs) rounds."""
    k = r % len(configs)
    order = configs[k:] + configs[:k]
    return order[::-1] if r // len(configs) % 2 else order


async def _check(client: httpx.AsyncClient, bridge: Server, other: Server) -> None:
    """A run on `bridge` completes and the other replica reads it from the shared store (once `bridge`'s
    writer has committed it: polled); else nothing is measured."""
    response = await client.post(bridge.url("/v1/autonomous"), json={"task": TASK, "mcp_servers": []})
    result = response.json()
    if response.status_code != 200 or result.get("status") != "completed":
        raise RuntimeError(f"{bridge.name}: unexpected run result {response.status_code}: {response.text[:1000]}")
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        read = await client.get(other.url(f"/v1/runs/{result['run_id']}"))
        if read.status_code == 200 and read.json().get("status") == "completed":
            return
        if read.status_code != 404 or time.monotonic() > deadline:
            raise RuntimeError(f"{other.name} reading {bridge.name}'s run: {read.status_code} {read.text[:1000]}")
        await asyncio.sleep(POLL_S)


def _load_client() -> httpx.AsyncClient:
    """httpx's API over aiohttp (the transport the gateway uses upstream): about 0.4 ms of CPU per request
    here instead of about 1.3 ms with httpx's own transport, CPU left to the servers on 2 cores."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=2.0)
    return httpx.AsyncClient(timeout=120, transport=AiohttpTransport(limits=limits, trust_env=False))


def _machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine so far (every process, other users' too)."""
    times = psutil.cpu_times()
    counted_twice = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # Linux: within user/nice
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - counted_twice)


def _cpu(processes: dict[str, Server | Postgres | None]) -> dict[str, float]:
    return {name: time.process_time() if p is None else p.cpu_s() for name, p in processes.items()}


async def _load(client: httpx.AsyncClient, targets: list[Server], total: int, cfg: Config | None) -> None:
    """`total` runs by CONCURRENCY workers, round-robin over `targets`; latencies and errors into `cfg`."""
    urls = itertools.cycle([s.url("/v1/autonomous") for s in targets])
    body = {"task": TASK, "mcp_servers": []}
    remaining = total
    errors: list[str] = []
    samples: list[float] = []
    perf = time.perf_counter

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            url = next(urls)
            start = perf()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {exc!r}")
                continue
            samples.append(perf() - start)
            if response.status_code != 200:
                errors.append(f"{url}: HTTP {response.status_code} {response.text[:300]}")
            elif response.json().get("status") != "completed":
                errors.append(f"{url}: run {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if cfg is None:
        if errors:
            raise RuntimeError(f"warm-up: {len(errors)} error(s), first: {errors[0]}")
        return
    cfg.samples += samples
    cfg.errors += errors


async def _settle(db: asyncpg.Connection, expected: int) -> int:
    """Poll the runs table until it holds `expected` runs (the writers' batches committed); the count."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = -1
    while time.monotonic() < deadline:
        last = int(await db.fetchval("SELECT count(*) FROM runs"))
        if last >= expected:
            return last
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"the store holds {last} runs after {SETTLE_TIMEOUT_S:g} s, expected {expected}")


def _rows(configs: list[Config], replicas: list[Server], by_instance: dict[str, int]) -> list[Row]:
    one = configs[0]
    names = [s.name for s in replicas]
    letters = "; ".join("ABCDEFGH"[: len(replicas)])
    rows: list[Row] = []
    for cfg in configs:
        rows.append(
            (
                f"{cfg.label}: runs/s (per round: lowest-highest)",
                f"{cfg.rate:.0f} runs/s ({min(cfg.round_rates):.0f}-{max(cfg.round_rates):.0f})",
                "report",
            )
        )
        rows.append(
            (
                f"{cfg.label}: latency p50 / p99 at concurrency {CONCURRENCY}",
                f"{cfg.p(0.5):.1f} / {cfg.p(0.99):.1f} ms",
                "report",
            )
        )
    for cfg in configs[1:]:
        ratios = [b / a for a, b in zip(one.round_rates, cfg.round_rates, strict=True)]
        rows.append(
            (
                f"{cfg.label} / one: runs/s (per round: lowest-highest)",
                f"{cfg.rate / one.rate:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
                f"report ({psutil.cpu_count()} cores shared with the mock, PostgreSQL and the load generator)",
            )
        )
    errors = [e for cfg in configs for e in cfg.errors]
    rows.append(
        (
            "errors (non-200, transport errors, runs not completed)",
            f"{len(errors)} of {sum(cfg.runs for cfg in configs):,}"
            + (f", first: {errors[0][:200]}" if errors else "")
            + f" ({verdict(not errors)})",
            "0",
        )
    )
    for cfg in configs:
        gateway_ms = sum(cfg.cpu_ms(name) for name in names)
        rows.append(
            (
                f"{cfg.label}: CPU per run: gateways ({letters}); mock; PostgreSQL; load generator",
                f"{gateway_ms:.2f} ({'; '.join(f'{cfg.cpu_ms(name):.2f}' for name in names)}); "
                f"{cfg.cpu_ms('mock'):.2f}; {cfg.cpu_ms('postgres'):.2f}; {cfg.cpu_ms('load generator'):.2f} ms/run",
                "report",
            )
        )
        rows.append(
            (
                f"{cfg.label}: cores busy per gateway process ({letters}; a process runs its event loop on one)",
                "; ".join(f"{cfg.cpu_s.get(name, 0.0) / cfg.window_s:.2f}" for name in names),
                "report",
            )
        )
        total_ms = gateway_ms + sum(cfg.cpu_ms(n) for n in ("mock", "postgres", "load generator"))
        ours = sum(cfg.cpu_s.values())
        others = cfg.machine_busy_s - ours
        rows.append(
            (
                f"{cfg.label}: all of the above, CPU per run; cores busy with it; cores busy with everything else "
                f"on the machine (other users' processes, the kernel), of {psutil.cpu_count()}",
                f"{total_ms:.2f} ms/run; {ours / cfg.window_s:.2f}; {others / cfg.window_s:.2f}",
                "report",
            )
        )
    rows.append(
        (
            "runs in the shared store, by BRIDGE_INSTANCE_ID (incl. warm-up)",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(by_instance.items())),
            "report",
        )
    )
    return rows
