"""Gateway processes sharing one run store: each one's lease, and what becomes of the runs of one that stops.

Every store holds a row in `instances` (id = BRIDGE_INSTANCE_ID) and renews its heartbeat every
`lease_s / HEARTBEATS_PER_LEASE` seconds on a connection of its own (never through the run writer's queue).
Every heartbeat period, the one process holding maintenance's claim lock (`maintenance.py`) looks for OTHER
rows whose heartbeat is older than `lease_s`, and claims each by
deleting it (`DELETE ... WHERE heartbeat_at < cutoff`: of two survivors racing, only one deletes the row) and,
in the same transaction, marks that instance's unfinished runs `interrupted` with their terminal `run.failed`
event, as a gateway does with its own runs at start-up. Times are the database's clock, so replicas whose
host clocks disagree still agree on who is late. A clean shutdown deletes its own row.

A process whose row was claimed (stalled, or cut off from the database, for a whole lease) finds it gone at
its next heartbeat: its runs that were recorded `interrupted` meanwhile are stopped here and their further
writes dropped (the record stays as the other process wrote it), and it registers again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Executable, Float, cast, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.agent import UNFINISHED_STATUSES, RunEvent
from services.errors import RunInterruptedError
from services.metrics import Metrics
from services.runs.tables import instances, run_events, runs

log = logging.getLogger("lmstudio_bridge.store")

DEFAULT_LEASE_S = 15.0  # BRIDGE_LEASE_S: a process whose heartbeat is older than this is taken for dead
HEARTBEATS_PER_LEASE = 3  # heartbeats (and looks for dead processes) per lease: two may fail in a row
_CHUNK = 500  # run ids per `IN (...)`


def db_now(dialect: str) -> ColumnElement[Any]:
    """The database's clock, in seconds since the epoch."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0  # SQLite: to the millisecond


async def interrupt_unfinished(conn: AsyncConnection, instance: str, data: str) -> list[str]:
    """Mark the instance's queued/running runs `interrupted` (`interrupt_runs`); returns their ids."""
    rows = await conn.execute(
        select(runs.c.run_id).where(runs.c.status.in_(UNFINISHED_STATUSES), runs.c.instance == instance)
    )
    return await interrupt_runs(conn, list(rows.scalars()), data)


async def interrupt_runs(conn: AsyncConnection, run_ids: list[str], data: str) -> list[str]:
    """Mark those of the runs still unfinished `interrupted`, each with a terminal `run.failed` event whose data
    is `data` (a problem document); returns their ids. Their end is the time of their last event; their rounds
    are those their recorded steps reached. Runs in the caller's transaction."""
    now = time.time()
    leftovers: dict[str, float] = {}
    for start in range(0, len(run_ids), _CHUNK):
        rows = await conn.execute(
            select(runs.c.run_id, runs.c.started_at, runs.c.created_at).where(
                runs.c.status.in_(UNFINISHED_STATUSES), runs.c.run_id.in_(run_ids[start : start + _CHUNK])
            )
        )
        leftovers |= {run_id: started or created for run_id, started, created in rows}
    if not leftovers:
        return []
    ids = list(leftovers)
    ends = {
        run_id: (last_seq, last_at)
        for run_id, last_seq, last_at in await conn.execute(
            select(run_events.c.run_id, func.max(run_events.c.seq), func.max(run_events.c.at))
            .where(run_events.c.run_id.in_(ids))
            .group_by(run_events.c.run_id)
        )
    }
    rounds: dict[str, int] = {}
    for run_id, step in await conn.execute(
        select(run_events.c.run_id, run_events.c.data).where(
            run_events.c.run_id.in_(ids), run_events.c.event == RunEvent.TOOL_CALL_COMPLETED
        )
    ):
        rounds[run_id] = max(rounds.get(run_id, 0), int(json.loads(step).get("round", 0)))
    ended: list[str] = []
    for run_id, started in leftovers.items():
        last_seq, last_at = ends.get(run_id, (0, None))
        finished = last_at or now
        marked = await conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.status.in_(UNFINISHED_STATUSES))  # not if another got there first
            .values(
                status="interrupted",
                finished_at=finished,
                duration_ms=round(max(0.0, finished - started) * 1000, 2),
                rounds=rounds.get(run_id, 0),
                error=data,
            )
        )
        if marked.rowcount != 1:
            continue
        await conn.execute(
            insert(run_events).values(run_id=run_id, seq=last_seq + 1, event=RunEvent.FAILED, data=data, at=now)
        )
        ended.append(run_id)
    return ended


class LeaseStore(Protocol):
    """What a lease needs of its store (`RunStore`): the database, this process's instance id, the counters,
    how a problem document becomes stored text, this process's runs in flight, and where to stop one that
    another process recorded `interrupted` (`fence`)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def instance(self) -> str: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def live(self) -> Collection[str]: ...

    def json(self, value: Any) -> str: ...

    def fence(self, run_id: str) -> None: ...


class Lease:
    """This process's row in `instances`: registered at start-up, renewed, released at a clean shutdown;
    and the claiming of other processes' expired rows. See the module docstring."""

    def __init__(self, store: LeaseStore, lease_s: float) -> None:
        self.store = store
        self.instance = store.instance
        self.lease_s = lease_s
        self.period = lease_s / HEARTBEATS_PER_LEASE
        self.started_at = 0.0  # our row's, as registered: another value there means another process wrote it
        self._dialect = store.engine.dialect.name

    async def _now(self, conn: AsyncConnection) -> float:
        return float((await conn.execute(select(db_now(self._dialect)))).scalar_one())

    def _upsert(self, now: float) -> Executable:
        values = {"id": self.instance, "started_at": now, "heartbeat_at": now}
        fresh = {"started_at": now, "heartbeat_at": now}
        # the dialect's own INSERT, imported here: SQLAlchemy's PostgreSQL dialect is ~2.5 MB a SQLite gateway
        # would carry for nothing (idle RSS, docs/performance.md)
        if self._dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(instances).values(values).on_conflict_do_update(index_elements=["id"], set_=fresh)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(instances).values(values).on_conflict_do_update(index_elements=["id"], set_=fresh)

    async def _register(self, conn: AsyncConnection) -> float:
        now = await self._now(conn)
        await conn.execute(self._upsert(now))
        self.started_at = now
        return now

    async def register(self) -> int:
        """At start-up: take this instance's row and mark the runs an earlier process of this instance left
        unfinished `interrupted` (one transaction: a survivor claiming the old row waits, then finds it fresh);
        returns how many. Warns when the row's heartbeat is fresh: another live process may have this id."""
        problem = RunInterruptedError("The gateway stopped while the run was in progress").problem()
        async with self.store.engine.begin() as conn:
            prior = (
                await conn.execute(select(instances.c.heartbeat_at).where(instances.c.id == self.instance))
            ).first()
            now = await self._register(conn)
            if prior is not None and now - prior[0] < self.lease_s:
                log.warning(
                    "run store: instance %r renewed its heartbeat %.1f s ago (lease %g s): another gateway process "
                    "seems to run with this BRIDGE_INSTANCE_ID (give each its own), unless one stopped just now "
                    "without shutting down",
                    self.instance,
                    now - prior[0],
                    self.lease_s,
                )
            return len(await interrupt_unfinished(conn, self.instance, self.store.json(problem)))

    async def beat(self) -> int:
        """One heartbeat: renew this process's row, then claim the expired rows of others (how many)."""
        await self.renew()
        return await self.sweep()

    async def renew(self) -> bool:
        """Renew the heartbeat; False when the row was no longer ours (claimed, or taken by a process with the
        same id): then the runs recorded `interrupted` meanwhile are stopped here, and the row taken again."""
        async with self.store.engine.begin() as conn:
            now = await self._now(conn)
            renewed = await conn.execute(
                update(instances)
                .where(instances.c.id == self.instance, instances.c.started_at == self.started_at)
                .values(heartbeat_at=now)
            )
        if renewed.rowcount:
            return True
        await self._lost()
        return False

    async def _lost(self) -> None:
        store = self.store
        store.metrics.leases_lost.inc()
        async with store.engine.begin() as conn:
            taken = (await conn.execute(select(instances.c.id).where(instances.c.id == self.instance))).first()
            await self._register(conn)
            live = list(store.live)
            ended = [
                run_id
                for start in range(0, len(live), _CHUNK)
                for run_id in (
                    await conn.execute(
                        select(runs.c.run_id).where(
                            runs.c.run_id.in_(live[start : start + _CHUNK]), runs.c.status == "interrupted"
                        )
                    )
                ).scalars()
            ]
        if taken is not None:
            log.error(
                "run store: another gateway process registered as instance %r: give every process its own "
                "BRIDGE_INSTANCE_ID; %d run(s) it recorded interrupted are stopped here",
                self.instance,
                len(ended),
            )
        else:
            log.error(
                "run store: this gateway sent no heartbeat for a whole lease (%g s) and another one took over "
                "instance %r; %d run(s) it recorded interrupted are stopped here",
                self.lease_s,
                self.instance,
                len(ended),
            )
        for run_id in ended:
            store.fence(run_id)

    async def sweep(self) -> int:
        """Claim every other instance whose heartbeat is older than the lease; returns how many were claimed."""
        async with self.store.engine.connect() as conn:
            cutoff = await self._now(conn) - self.lease_s
            late = (
                await conn.execute(
                    select(instances.c.id).where(instances.c.id != self.instance, instances.c.heartbeat_at < cutoff)
                )
            ).scalars()
            late_ids = list(late)
        claimed = 0
        for other in late_ids:
            ids = await self.claim(other)
            if ids is not None:
                claimed += 1
                self.store.metrics.claims.labels("lease").inc(len(ids))
                log.warning(
                    "run store: gateway instance %r sent no heartbeat for %g s: %d of its run(s) marked interrupted",
                    other,
                    self.lease_s,
                    len(ids),
                )
        return claimed

    async def claim(self, other: str) -> list[str] | None:
        """Delete `other`'s row if its heartbeat is older than the lease and, in the same transaction, mark its
        unfinished runs `interrupted`; their ids, or None when the row was fresh or gone (someone else claimed)."""
        detail = f"The gateway process {other!r} that ran it stopped answering (no heartbeat for {self.lease_s:g} s)"
        data = self.store.json(RunInterruptedError(detail).problem())
        async with self.store.engine.begin() as conn:
            cutoff = await self._now(conn) - self.lease_s
            gone = await conn.execute(
                delete(instances).where(instances.c.id == other, instances.c.heartbeat_at < cutoff)
            )
            if gone.rowcount != 1:
                return None
            return await interrupt_unfinished(conn, other, data)

    async def release(self) -> None:
        """A clean shutdown: delete this process's row (only if it is still ours)."""
        async with self.store.engine.begin() as conn:
            await conn.execute(
                delete(instances).where(instances.c.id == self.instance, instances.c.started_at == self.started_at)
            )

    async def run(self) -> None:
        """Heartbeat for ever (the first a period after `register`); a failed one is logged, counted and tried
        again a period later. Claiming the expired rows of others is maintenance (`maintenance.py`)."""
        while True:
            await asyncio.sleep(self.period)
            try:
                async with asyncio.timeout(self.lease_s):
                    await self.renew()
            except Exception as exc:
                self.store.metrics.store_errors.inc()
                log.warning("run store: heartbeat failed (%s); trying again in %g s", exc or type(exc), self.period)
