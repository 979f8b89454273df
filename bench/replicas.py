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
    "each round measuring all three in the orders 123 231 312 321 132 213 (each configuration first, second and "
    "third, and after each other one, equally often), so that drift on the shared machine hits all alike. runs/s "
    "= runs / wall time of "
    "the configuration's rounds; latency = each request's time under that load (queueing included). CPU "
    "per run = psutil user+system time over a round / runs, read once every run of the round is in the "
    "store (the table polled), so that the store's batched writes are counted: gateways (the processes "
    "only, no children), the mock, PostgreSQL (postmaster and backends), the load generator (this process)."
)


ANALYSIS = (
    "**What the figures say** (2026-11-29, nine runs of this section): on this machine a second replica did "
    "not add throughput to speak of. Two / one: 0.92, 1.11, 0.88 and 1.02x in the four runs with the least "
    "other load (one replica 492, 585, 545, 553 runs/s; two 452, 648, 480, 566), 0.89 and 0.91x in two more, "
    "and 0.76-0.83x in three runs while other engineers' test suites held most of the machine (one replica "
    "209-347 runs/s). Errors: 0 in every run (24,000 runs each); both replicas recorded every run in the one "
    "store, and each read the other's run back. **Why**: the work is CPU-bound and the two cores are shared. "
    "A run costs about 2.2-2.3 ms of CPU in all with one replica (gateway 1.4-1.5, load generator 0.5, mock "
    "0.2, PostgreSQL 0.12 ms), and other users' processes kept 0.3-0.8 of a core busy during the rounds (the "
    '"everything else" rows), so runs/s is about the cores left to us / CPU per run (1.27 cores / 2.20 ms = '
    "577 runs/s against 585 measured). One gateway was not the bottleneck: its process used 0.7-0.8 of its "
    "core, its event loop had idle time, so a second process has nothing to take off it. And a second replica"
    " costs CPU: the gateways' CPU per run goes from 1.39-1.47 to 1.55-1.70 ms in the six quieter runs "
    "(+0.16-0.26 ms: the fixed costs of each process are shared by half as many runs: its store writer "
    "commits about twice as many, smaller batches, PostgreSQL +0.03-0.05 ms/run; each event-loop wake-up "
    "serves fewer requests; the mock sees two connection pools), all of it 2.2-2.3 -> 2.4-2.65 ms/run (+10-16"
    " %); with the CPU we get fixed, that is the 0.88-0.92x. In the two runs where our processes got more of "
    "the machine during the two-replica rounds (1.54 cores instead of 1.27; 1.41 instead of 1.24: probably "
    "the larger share the scheduler gives one more busy process against the other load), two replicas came "
    "out ahead or even (1.11x, 1.02x). From these figures, the most a quiet 2-core machine could show: one "
    "replica stops at its own core, ~1 / 1.45 ms = ~690 runs/s (the rest, ~0.85 ms/run, fits on the other "
    "core), two replicas at 2 cores / ~2.5 ms = ~800 runs/s: ~1.15x. Replicas scale where each gets its own "
    "cores (one machine each, or a machine with 4+ cores); on this one the gain is availability (either "
    "replica serves and reads every run), not runs/s. Latency under this load: p50 20-35 ms, p99 103-145 ms, "
    "a little higher with two replicas in most runs (queueing for the CPU: a single run alone takes ~3 ms)."
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
