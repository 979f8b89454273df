"""Replicas killed under load: three gateway processes on one PostgreSQL, background runs with tool calls, one
replica killed (SIGKILL) every few seconds and started again. Used by tests/scenarios/test_chaos.py (bounded, in
`make test`) and `python -m bench.chaos` (the long version, in `make soak`).

Each run has a unique tag and calls the counting MCP server (tests/mcp_servers/counting_server.py) once a round,
`mark(tag, round)`; every `approval_every`-th run calls `gated_mark` in its last round, which needs a person's
approval. Clients submit to a random live replica; every `follow_every`-th run (and every run with an approval)
is followed over SSE from a random live replica, reconnecting to another with Last-Event-ID when its replica
dies, and its approval is sent to a random live replica (not the follower's). `check` then reads the store and
the execution log and returns what broke the rules of issue 33 (`Outcome.problems`), with the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import REPO, call, frames, script
from tests.mcp_servers.counting_server import executions
from tests.processes import free_port, log_file, log_tail, spawn_python, wait_healthy

TERMINAL = ("run.completed", "run.failed")
ENDED = ("completed", "interrupted")  # the only statuses a run may end with here
UNFINISHED = ("queued", "running", "awaiting_approval")


@dataclass
class ChaosConfig:
    runs: int = 24
    concurrency: int = 6
    rounds: int = 3
    round_delay_ms: int = 250
    kill_every_s: float = 4.0
    max_kills: int = 3
    approval_every: int = 4
    follow_every: int = 2
    lease_s: float = 2.0
    seed: int = 33
    deadline_s: float = 150.0  # the load's time limit: what still runs then is reported, not waited for


class Replica:
    """One gateway process, killed and started again on the same port and instance id."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env, self.port = name, env, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.log: IO[bytes] | None = None
        self.up = False

    async def start(self) -> None:
        self.log = self.log or log_file(f"chaos-{self.name}-")
        env = {**self.env, "BRIDGE_INSTANCE_ID": self.name}
        self.process = await spawn_python("app.cli", "serve", "--port", str(self.port), log=self.log, env=env)
        await wait_healthy(f"{self.url}/healthz", self.process, 60, lambda: log_tail(self.log.name if self.log else ""))
        self.up = True

    async def kill(self) -> None:
        self.up = False
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        self.up = False
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                await self.kill()


@dataclass
class Outcome:
    accepted: dict[str, str] = field(default_factory=dict)  # tag -> run id (202)
    uncertain: set[str] = field(default_factory=set)  # tags whose POST got no answer (the replica died)
    followed: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # run id -> (id, event) as read
    reconnects: int = 0
    approvals: dict[str, str] = field(default_factory=dict)  # run id -> the replica the decision went to
    kills: list[tuple[float, str]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    executions: int = 0
    duration_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def environment(mock_url: str, database_url: str, directory: Path, lease_s: float) -> dict[str, str]:
    """A replica's environment: the mock LM Studio, the counting server, the shared store, a short lease."""
    counting = {
        "command": sys.executable,
        "args": ["-m", "tests.mcp_servers.counting_server"],
        "cwd": str(REPO),
        "env": {"COUNTING_FILE": str(directory / "executions.log")},
    }
    (directory / "mcp.json").write_text(json.dumps({"mcpServers": {"counting": counting}}))
    return {
        "LMSTUDIO_BASE_URL": mock_url,
        "MCP_CONFIG": str(directory / "mcp.json"),
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_LEASE_S": str(lease_s),
        "BRIDGE_APPROVAL_TOOLS": "counting__gated_mark",
        "BRIDGE_SHUTDOWN_GRACE_S": "1",
        "BRIDGE_LOG_LEVEL": "WARNING",
        "BRIDGE_MAX_CONCURRENT_RUNS": "32",
    }


class Chaos:
    """The load, the killer and the checks over three replicas (see the module docstring)."""

    def __init__(self, cfg: ChaosConfig, env: dict[str, str], directory: Path) -> None:
        self.cfg, self.directory = cfg, directory
        self.rng = random.Random(cfg.seed)
        self.replicas = [Replica(f"chaos-{name}", env) for name in "abc"]
        self.database_url = env["BRIDGE_DATABASE_URL"]
        self.out = Outcome()
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=2))
        self._loading = True
        self._pending: set[asyncio.Task[None]] = set()  # approvals being sent

    async def __aenter__(self) -> Chaos:
        for replica in self.replicas:  # one after the other: three migrations at once only wait on each other
            await replica.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))
        await self.client.aclose()
        for replica in self.replicas:  # the logs are kept only when a rule broke (their paths are printed)
            if replica.log is not None:
                replica.log.close()
                if self.out.problems:
                    print(f"{replica.name}'s log: {replica.log.name}")
                else:
                    await asyncio.to_thread(Path(replica.log.name).unlink, missing_ok=True)

    def live(self, avoid: str | None = None) -> Replica:
        """A random replica that is up (not `avoid` when another one is)."""
        up = [r for r in self.replicas if r.up] or self.replicas
        return self.rng.choice([r for r in up if r.url != avoid] or up)

    async def run(self) -> Outcome:
        started = time.monotonic()
        tags = iter(range(self.cfg.runs * 5))  # at least `runs`; more while the kills are not all done
        killer = asyncio.create_task(self._killer())
        try:
            async with asyncio.timeout(self.cfg.deadline_s):
                await asyncio.gather(*(self._worker(tags) for _ in range(self.cfg.concurrency)))
        except TimeoutError:
            stuck = await self._scalar(
                f"SELECT string_agg(run_id || ' ' || status, ', ') FROM runs WHERE status IN {UNFINISHED}"
            )
            self.out.problems.append(
                f"the load did not end within {self.cfg.deadline_s:g} s; unfinished: {stuck}; "
                f"approvals: {self.out.approvals}"
            )
        finally:
            self._loading = False
            await killer
        await self.settle()
        self.out.duration_s = time.monotonic() - started
        await self.check()
        return self.out

    async def _killer(self) -> None:
        while self._loading and len(self.out.kills) < self.cfg.max_kills:
            await asyncio.sleep(self.cfg.kill_every_s)
            if not self._loading:
                return
            busy = f"SELECT instance FROM runs WHERE status IN {UNFINISHED} GROUP BY instance ORDER BY count(*) DESC"
            busiest = await self._scalar(busy)  # the replica with the most runs in flight (a random one if none)
            victim = next((r for r in self.replicas if r.name == busiest), None) or self.rng.choice(self.replicas)
            await victim.kill()
            self.out.kills.append((time.time(), victim.name))
            await asyncio.sleep(self.rng.uniform(0, 1.5 * self.cfg.lease_s))  # sometimes the others claim first
            await victim.start()

    def _task(self, index: int, tag: str) -> str:
        calls = [[call("counting__mark", {"tag": tag, "step": step})] for step in range(1, self.cfg.rounds + 1)]
        if index % self.cfg.approval_every == 0:
            calls[-1] = [call("counting__gated_mark", {"tag": tag, "step": self.cfg.rounds})]
        return f"chaos {tag} " + script(calls=calls, delay_ms=self.cfg.round_delay_ms)

    async def _worker(self, tags: Any) -> None:
        for index in tags:
            if index >= self.cfg.runs and len(self.out.kills) >= self.cfg.max_kills:
                return
            tag = f"t{self.cfg.seed}x{index:05d}"
            body = {"task": self._task(index, tag), "mcp_servers": ["counting"], "max_rounds": 10}
            try:
                response = await self.client.post(f"{self.live().url}/v1/runs", json=body)
            except httpx.TransportError:
                self.out.uncertain.add(tag)
                continue
            if response.status_code != 202:
                self.out.problems.append(f"{tag}: POST /v1/runs answered {response.status_code}: {response.text}")
                continue
            run_id = response.json()["run_id"]
            self.out.accepted[tag] = run_id
            if index % self.cfg.approval_every == 0 or index % self.cfg.follow_every == 0:
                await self._follow(run_id)
            else:
                await self._until_ended(run_id)

    async def _until_ended(self, run_id: str) -> None:
        """Poll the run's record on live replicas until it has ended (its replica may die meanwhile)."""
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await self.client.get(f"{self.live().url}/v1/runs/{run_id}")
                if response.status_code == 200 and response.json()["status"] not in UNFINISHED:
                    return
            await asyncio.sleep(0.2)

    async def _follow(self, run_id: str) -> None:
        """Follow the run's events to the end, reconnecting to a live replica with Last-Event-ID; approve."""
        seen: list[tuple[int, str]] = self.out.followed.setdefault(run_id, [])
        while not seen or seen[-1][1] not in TERMINAL:
            replica = self.live()
            headers = {"Last-Event-ID": str(seen[-1][0])} if seen else {}
            try:
                async with self.client.stream("GET", f"{replica.url}/v1/runs/{run_id}/events", headers=headers) as r:
                    async for frame in frames(r):
                        seen.append((frame.id, frame.event))
                        if frame.event == "approval.requested":
                            self._approve(run_id, frame.data["tool_call_id"], replica.url)
                if seen and seen[-1][1] not in TERMINAL:  # the stream ended without the run's end: a rule broke
                    self.out.problems.append(f"{run_id}: a stream from {replica.name} ended after {seen[-1]}")
                    return
            except (httpx.TransportError, AssertionError):
                self.out.reconnects += 1
                await asyncio.sleep(0.1)  # back off before the next replica; not a wait for an event

    def _approve(self, run_id: str, call_id: str, follower: str) -> None:
        async def send() -> None:
            for _ in range(20):
                target = self.live(avoid=follower)
                with contextlib.suppress(httpx.TransportError):
                    url = f"{target.url}/v1/runs/{run_id}/approvals/{call_id}"
                    response = await self.client.post(url, json={"decision": "approve"})
                    self.out.approvals[run_id] = f"{target.name} {response.status_code}"
                    return
                await asyncio.sleep(0.1)

        task = asyncio.get_running_loop().create_task(send())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settle(self, within_s: float = 60.0) -> None:
        """Until every stored run has ended (a killed replica's runs within a lease and a heartbeat)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            unfinished = f"SELECT count(*) FROM runs WHERE status IN {UNFINISHED}"
            if not await self._scalar(unfinished):
                return
            await asyncio.sleep(0.5)

    async def _scalar(self, sql: str) -> Any:
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(sql))).scalar()
        finally:
            await engine.dispose()

    async def check(self) -> None:
        """The rules of issue 33, read from the store and the execution log; what broke goes to `problems`."""
        rows, failed_at, events = await self._stored()
        by_tag = {task.split()[1]: (run_id, status) for run_id, status, task in rows}
        self._check_records(rows, by_tag)
        done = executions(str(self.directory / "executions.log"))
        self.out.executions = len(done)
        counted: dict[tuple[str, int], int] = {}
        for at, tag, step, _pid in done:
            counted[(tag, step)] = counted.get((tag, step), 0) + 1
            run_id, status = by_tag.get(tag, ("", ""))
            if status == "interrupted" and at > failed_at.get(run_id, float("inf")):
                self.out.problems.append(f"{tag}: step {step} executed after the run was claimed")
        self.out.problems += [f"{tag}: step {step} executed {n} times" for (tag, step), n in counted.items() if n > 1]
        for tag, (run_id, status) in by_tag.items():
            missing = [step for step in range(1, self.cfg.rounds + 1) if (tag, step) not in counted]
            if status == "completed" and missing:  # a gated last step missing: the approval did not take effect
                self.out.problems.append(
                    f"{tag}: completed without step(s) {missing} ({self.out.approvals.get(run_id)})"
                )
        for run_id, seen in self.out.followed.items():
            if seen != events[run_id]:
                self.out.problems.append(f"{run_id}: the follower read {seen}, the store holds {events[run_id]}")

    async def _stored(
        self,
    ) -> tuple[list[tuple[str, str, str]], dict[str, float], dict[str, list[tuple[int, str]]]]:
        """Every run (id, status, task), the time of each `run.failed` event, the followed runs' events."""
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                rows = [(r, s, t) for r, s, t in await conn.execute(text("SELECT run_id, status, task FROM runs"))]
                failures = await conn.execute(text("SELECT run_id, at FROM run_events WHERE event = 'run.failed'"))
                failed_at: dict[str, float] = {run_id: at for run_id, at in failures}
                events: dict[str, list[tuple[int, str]]] = {}
                for run_id in self.out.followed:
                    stored = await conn.execute(
                        text("SELECT seq, event FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id}
                    )
                    events[run_id] = [(seq, event) for seq, event in stored]
        finally:
            await engine.dispose()
        return rows, failed_at, events

    def _check_records(self, rows: list[tuple[str, str, str]], by_tag: dict[str, tuple[str, str]]) -> None:
        """Every accepted run is in the store, and every stored run ended `completed` or `interrupted`."""
        for tag, run_id in self.out.accepted.items():
            found = by_tag.get(tag)
            if found is None or found[0] != run_id:
                self.out.problems.append(f"{tag}: accepted as {run_id}, not in the store")
                continue
            self.out.statuses[found[1]] = self.out.statuses.get(found[1], 0) + 1
        for run_id, status, task in rows:
            if status not in ENDED:
                self.out.problems.append(f"{run_id} ({task.split()[1]}): ended {status}")
