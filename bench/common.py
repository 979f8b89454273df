"""Shared benchmark helpers: processes (floor, mock LM Studio, gateway), latency stats, CPU and RSS sampling.

Every process runs as a subprocess on 127.0.0.1 with a free port and is stopped (and its children with
it) when its context manager exits, also on errors. Latency is measured with sequential requests on one
keep-alive client after a warm-up; the contenders of a section are interleaved in blocks so that drift
on a shared machine hits them all alike. Server CPU is the server process's user+system time (psutil)
over the measured requests divided by their number: it does not depend on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import httpx
import psutil
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.helpers import REPO, mcp_servers_json
from tests.processes import free_port, log_file, log_tail, terminate, wait_healthy

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
BLOCKS = 10

Row = tuple[str, str, str]
Call = Callable[[], Awaitable[object]]


# --- processes ------------------------------------------------------------------------------------


class Server:
    """A server subprocess on 127.0.0.1:<port>, with psutil access to its CPU time, RSS and children."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, port: int, log: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ps = psutil.Process(process.pid)
        self._log = log

    def url(self, path: str) -> str:
        return self.base_url + path

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process itself (not its children)."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def precise_cpu_s(self) -> float:
        """CPU seconds of all the process's threads in ns resolution (`/proc/<pid>/task/*/schedstat`; psutil
        counts 10 ms ticks, too coarse around a single call); `cpu_s` where /proc is missing."""
        tasks = Path(f"/proc/{self.ps.pid}/task")
        if not tasks.is_dir():
            return self.cpu_s()
        total = 0
        for stat in tasks.glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[0])
        return total / 1e9

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def descendants(self) -> set[int]:
        """Pids of every live child process, recursively."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return {p.pid for p in self.ps.children(recursive=True)}
        return set()

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self._log.name, chars)

    async def wait_healthy(self, path: str) -> None:
        try:
            await wait_healthy(self.url(path), self.process, START_TIMEOUT_S, self.log_tail)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.name} on port {self.port} not healthy: {exc}") from None

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; kills children left behind. Returns how many were left."""
        if self._log.closed:
            return 0
        children = _processes(self.descendants())
        await terminate(self.process, STOP_TIMEOUT_S)
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 2)
        for orphan in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                orphan.kill()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        return len(alive)


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


@contextlib.asynccontextmanager
async def serve(
    name: str, module: str, *args: str, health: str, env: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    """``python -m <module> <args> --host 127.0.0.1 --port <free>``; healthy on entry, stopped on exit."""
    async with serve_command(name, [sys.executable, "-m", module, *args], health=health, env=env) as server:
        yield server


@contextlib.asynccontextmanager
async def serve_command(
    name: str, command: list[str], *, health: str, env: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    """``<command> --host 127.0.0.1 --port <free>`` (any executable, e.g. another venv's); healthy on entry,
    stopped (with its children) on exit."""
    port = free_port()
    log = log_file(f"bench-{name}-")
    process = await asyncio.create_subprocess_exec(
        *command,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )
    server = Server(name, process, port, log)
    try:
        await server.wait_healthy(health)
        yield server
    finally:
        await server.stop()


def floor() -> contextlib.AbstractAsyncContextManager[Server]:
    """The floor baseline (bench/floor.py), served like the gateway."""
    return serve("floor", "bench.floor", health="/healthz")


def bare_proxy(upstream: str) -> contextlib.AbstractAsyncContextManager[Server]:
    """bench/proxy.py in front of `upstream`: the least any Python gateway does on a pass-through."""
    return serve("proxy", "bench.proxy", "--upstream", upstream, health="/healthz")


def mock_lmstudio() -> contextlib.AbstractAsyncContextManager[Server]:
    """The mock LM Studio (zero latency unless a script asks for a delay)."""
    return serve("mock", "tests.mock_lmstudio", health="/_mock/health")


def stdlib_upstream() -> contextlib.AbstractAsyncContextManager[Server]:
    """bench/stdlib_upstream.py: a fake LM Studio written with the standard library only (no mock code)."""
    return serve("stdlib-upstream", "bench.stdlib_upstream", health="/v1/models")


@contextlib.asynccontextmanager
async def gateway(
    lmstudio_url: str, mcp_config: Path, name: str = "gateway", module: str = "app.cli", **env: str
) -> AsyncIterator[Server]:
    """``python -m app.cli serve`` with BRIDGE_LOG_LEVEL=WARNING unless `env` sets it; extra settings as
    environment variables. `name` tells gateways of one section apart (CPU time is kept per name); `module`
    is another entry point taking the same `serve` arguments (bench/run_wall.py's timed gateway).
    Unless `env` sets BRIDGE_DATABASE_URL, the run store is a SQLite file in a temp dir removed on exit
    (the default, ./data/runs.db, would be in the repository)."""
    settings = {"LMSTUDIO_BASE_URL": lmstudio_url, "MCP_CONFIG": str(mcp_config), "BRIDGE_LOG_LEVEL": "WARNING"}
    with contextlib.ExitStack() as files:
        if "BRIDGE_DATABASE_URL" not in env:
            directory = files.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-store-"))
            settings["BRIDGE_DATABASE_URL"] = f"sqlite+aiosqlite:///{directory}/runs.db"
        async with serve(name, module, "serve", health="/healthz", env={**settings, **env}) as server:
            yield server


# --- mcpo (the peer of the REST tool call), in its own venv -------------------------------------------

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmstudio-bridge" / "bench"
# mcpo needs the 1.x MCP SDK (the gateway runs 2.x) and a FastAPI older than 0.145: its own venv, pinned
MCPO_REQUIREMENTS = ("mcpo==0.0.20", "mcp<2", "fastapi<0.145")
MCPO_VENV = CACHE / "mcpo-venv"
INSTALL_TIMEOUT_S = 600.0


def mcpo_executable() -> Path:
    """`mcpo` in ``<cache>/mcpo-venv``, created with MCPO_REQUIREMENTS on first use (and again when they
    change); the pip output goes to ``<cache>/mcpo-venv.log``. Blocking: call it in a thread."""
    marker = MCPO_VENV / ".installed"
    wanted = "\n".join(MCPO_REQUIREMENTS)
    executable = MCPO_VENV / "bin" / "mcpo"
    if executable.exists() and marker.exists() and marker.read_text() == wanted:
        return executable
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "mcpo-venv.log", "wb") as log:
        for command in (
            [sys.executable, "-m", "venv", "--clear", str(MCPO_VENV)],
            [str(MCPO_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *MCPO_REQUIREMENTS],
        ):
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed; see {log.name}")
    marker.write_text(wanted)
    return executable


@contextlib.asynccontextmanager
async def mcpo(mcp_config: Path, log_level: str = "WARNING") -> AsyncIterator[Server]:
    """mcpo serving every server of `mcp_config` at ``/<server>/<tool>``; healthy once `/docs` answers (its
    sessions are opened in its lifespan, before it accepts requests)."""
    executable = await asyncio.to_thread(mcpo_executable)
    command = [str(executable), "--config", str(mcp_config), "--log-level", log_level]
    async with serve_command("mcpo", command, health="/docs") as server:
        yield server


def nothing_listening() -> str:
    """A URL where nothing answers (for a gateway whose LM Studio the benchmark never reaches)."""
    return f"http://127.0.0.1:{free_port()}"


def write_mcp_config(directory: Path, servers: Iterable[str] | None = None) -> Path:
    """An mcp.json with the test suite's real servers (tests/conftest.py), all of them or the named ones."""
    config = mcp_servers_json(str(directory))
    if servers is not None:
        config["mcpServers"] = {name: config["mcpServers"][name] for name in servers}
    path = directory / "mcp.json"
    path.write_text(json.dumps(config))
    return path


def server_params(directory: Path, name: str) -> StdioServerParameters:
    """How the gateway starts server `name` (same command, args, env and cwd as in write_mcp_config)."""
    cfg = mcp_servers_json(str(directory))["mcpServers"][name]
    return StdioServerParameters(command=cfg["command"], args=cfg["args"], env=cfg.get("env"), cwd=cfg.get("cwd"))


def _devnull() -> TextIO:
    return open(os.devnull, "w")


@contextlib.asynccontextmanager
async def mcp_session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """A kept, initialized ClientSession on a stdio server (the direct path). Enter and exit in one task."""
    with _devnull() as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def http_client(connections: int = 100) -> httpx.AsyncClient:
    """A keep-alive client. Contenders measured at concurrency each need their own (`contender_client`)."""
    # idle connections dropped after 2 s, before uvicorn's 5 s keep-alive timeout closes them under a request
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0)
    return httpx.AsyncClient(timeout=120, limits=limits)


async def contender_client(stack: contextlib.AsyncExitStack) -> httpx.AsyncClient:
    """A client of one contender, closed with `stack`: with one pool shared by several contenders, every
    request looks through every contender's connections (httpcore's pool is linear in them), and at
    concurrency 16 the load generator became the limit (docs/performance.md, fourth session)."""
    return await stack.enter_async_context(http_client())


class HTTPFailure(RuntimeError):
    """An answer other than 200; `summary` is the status and the problem document's detail."""

    def __init__(self, url: str, response: httpx.Response) -> None:
        self.summary = f"HTTP {response.status_code}"
        with contextlib.suppress(ValueError, AttributeError):
            self.summary += f": {response.json().get('detail')}"
        super().__init__(f"POST {url} answered {response.status_code}: {response.text[:1000]}")


def post_json(client: httpx.AsyncClient, url: str, body: Any | None = None) -> Callable[[], Awaitable[Any]]:
    """A call that POSTs `body` (GETs when it is None) and returns the decoded answer; anything but 200
    raises HTTPFailure."""

    async def call() -> Any:
        response = await (client.get(url) if body is None else client.post(url, json=body))
        if response.status_code != 200:
            raise HTTPFailure(url, response)
        return response.json()

    return call


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One way of doing the work; `servers` are the processes whose CPU time is counted for it."""

    label: str
    call: Call
    servers: list[Server] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    own_cpu_s: float = 0.0  # CPU time of the benchmark process itself while this contender ran

    @property
    def own_cpu_ms(self) -> float:
        """CPU ms of the benchmark process per measured call: the work of a contender that runs in it."""
        return self.own_cpu_s / len(self.samples) * 1000

    def p(self, q: float) -> float:
        """Nearest-rank percentile in ms."""
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    @property
    def p50(self) -> float:
        return self.p(0.50)

    @property
    def p99(self) -> float:
        return self.p(0.99)

    def cpu_ms(self, server: Server) -> float:
        """CPU ms of `server` per measured call."""
        return self.cpu_s[server.name] / len(self.samples) * 1000


async def warm_up(contenders: Iterable[Contender], n: int) -> None:
    for contender in contenders:
        for _ in range(n):
            await contender.call()


async def compare(contenders: list[Contender], n: int, blocks: int = BLOCKS) -> None:
    """n sequential calls per contender, interleaved in `blocks` blocks, with CPU time per server."""
    per_block = max(1, n // blocks)
    perf = time.perf_counter
    for block in range(blocks):
        order = contenders[block % len(contenders) :] + contenders[: block % len(contenders)]
        for contender in order:
            before = {s.name: s.cpu_s() for s in contender.servers}
            call, samples = contender.call, contender.samples
            own = time.process_time()
            for _ in range(per_block):
                start = perf()
                await call()
                samples.append(perf() - start)
            contender.own_cpu_s += time.process_time() - own
            for s in contender.servers:
                contender.cpu_s[s.name] = contender.cpu_s.get(s.name, 0.0) + s.cpu_s() - before[s.name]


async def throughput(call: Call, concurrency: int, total: int) -> float:
    """Calls per second with `concurrency` workers sharing `total` calls."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def throughputs(
    contenders: list[Contender], concurrency: int, total: int, rounds: int = 4
) -> dict[str, Throughput]:
    """Calls per second of each contender with `concurrency` workers sharing `total` calls, measured in
    `rounds` rounds that interleave the contenders (so that drift on a shared machine hits them alike), and
    the cores its servers and the benchmark process used meanwhile."""
    per_round = max(1, total // rounds)
    found = {c.label: Throughput() for c in contenders}
    for r in range(rounds):
        for contender in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
            seen = found[contender.label]
            before = {s.name: s.cpu_s() for s in contender.servers}
            own, started = time.process_time(), time.perf_counter()
            await throughput(contender.call, concurrency, per_round)
            seen.seconds += time.perf_counter() - started
            seen.own_cpu_s += time.process_time() - own
            for s in contender.servers:
                seen.cpu_s[s.name] = seen.cpu_s.get(s.name, 0.0) + s.cpu_s() - before[s.name]
            seen.calls += per_round
    return found


@dataclass
class Throughput:
    """What `throughputs` saw of one contender: calls, wall seconds, CPU seconds per server and of the
    benchmark process."""

    calls: int = 0
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    own_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def cores(self, server: Server | None = None) -> float:
        """Cores the server (the benchmark process when None) used on average while the calls ran."""
        return (self.own_cpu_s if server is None else self.cpu_s[server.name]) / self.seconds


class PeakRSS:
    """``async with PeakRSS(server) as rss: ...`` samples the server's RSS every `interval_s`; see `.peak_mb`."""

    def __init__(self, server: Server, interval_s: float = 0.05) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, self.server.rss_mb())
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> PeakRSS:
        self.peak_mb = self.server.rss_mb()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak_mb = max(self.peak_mb, self.server.rss_mb())


# --- rows -----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def latency_row(contender: Contender, target: str = "baseline") -> Row:
    return (f"{contender.label}: p50 / p99", f"{contender.p50:.2f} / {contender.p99:.2f} ms", target)


def budget_row(subject: Contender, direct: Contender, floor: Contender, allowance_ms: float, direct_name: str) -> Row:
    """The target `subject p50 <= direct p50 + floor p50 + allowance`, with what is left over."""
    budget = direct.p50 + floor.p50 + allowance_ms
    excess = subject.p50 - direct.p50 - floor.p50
    return (
        f"gateway overhead: p50 - ({direct_name} p50 + floor p50)",
        f"{excess:+.2f} ms ({verdict(subject.p50 <= budget)})",
        f"<= +{allowance_ms:g} ms, i.e. gateway p50 <= {budget:.2f} ms",
    )


def cpu_row(
    label: str, contender: Contender, server: Server, target_ms: float | None = None, unit: str = "request"
) -> Row:
    value = contender.cpu_ms(server)
    if target_ms is None:
        return (label, f"{value:.2f} ms/{unit}", "baseline")
    return (label, f"{value:.2f} ms/{unit} ({verdict(value <= target_ms)})", f"<= {round(target_ms, 2):g} ms/{unit}")


def openai_tools(tools: list[Any], server: str) -> list[dict[str, Any]]:
    """An MCP server's tools (`list_tools().tools`) as OpenAI function tools named like the gateway names
    them (`<server>__<tool>`), for the hand-written scripts."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"{server}__{t.name}",
                "description": t.description or "",
                "parameters": t.input_schema,
            },
        }
        for t in tools
    ]
