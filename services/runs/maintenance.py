"""The store's maintenance, done by one gateway process at a time: claiming the runs of processes that stopped,
and pruning runs older than the retention period.

Each task runs under a lock of its own: on PostgreSQL a transaction-level advisory lock
(`pg_try_advisory_xact_lock`, held by a transaction kept open while the task runs on other connections, so a
process that dies lets go of it with its connection); a process that finds the lock taken skips that round.
SQLite serves one process (`operations.md`): its lock is always free.

Claiming, every heartbeat period (`lease_s / 3`): the instances whose heartbeat is older than the lease (their
runs are marked `interrupted`, `lease.py`); then the unfinished runs whose instance has no row in `instances`
at all (a process that never registered, such as an older version in a rolling upgrade) and whose last sign
of life (created, started, or last event) is older than `orphan_grace_s`; then the per-key run counts of
instances that no longer hold a row. Pruning, every `PRUNE_EVERY_S`: finished runs older than the retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.agent import UNFINISHED_STATUSES
from services.errors import RunInterruptedError
from services.metrics import Metrics
from services.runs.lease import Lease, interrupt_runs
from services.runs.tables import approvals, instances, key_runs, run_events, runs

log = logging.getLogger("lmstudio_bridge.store")

PRUNE_EVERY_S = 3600.0
DEFAULT_ORPHAN_GRACE_S = 900.0  # BRIDGE_ORPHAN_GRACE_S
CLAIM_LOCK, PRUNE_LOCK = 0x6C6D7363, 0x6C6D7364  # advisory lock ids (the migration's is 0x6C6D7362)
_BATCH = 500


@asynccontextmanager
async def held(engine: AsyncEngine, lock_id: int) -> AsyncIterator[bool]:
    """Whether this process got the maintenance lock `lock_id` (without waiting); it holds it inside the block."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.begin() as conn:
        yield bool(await conn.scalar(select(func.pg_try_advisory_xact_lock(lock_id))))


class MaintenanceStore(Protocol):
    """What maintenance needs of its store (`RunStore`): the database, its counters, the retention, and how a
    problem document becomes stored text."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def retention_days(self) -> float: ...

    def json(self, value: Any) -> str: ...


class Maintenance:
    """Claims and prunes under their locks; see the module docstring."""

    def __init__(self, store: MaintenanceStore, lease: Lease, orphan_grace_s: float) -> None:
        self.store = store
        self.lease = lease
        self.orphan_grace_s = orphan_grace_s

    async def claim(self) -> int | None:
        """One claiming round: expired instances, orphaned runs, stale key counts. How many runs were marked
        `interrupted`; None when another process holds the lock."""
        metrics = self.store.metrics
        async with held(self.store.engine, CLAIM_LOCK) as mine:
            if not mine:
                metrics.maintenance.labels("claim", "skipped").inc()
                return None
            claimed = await self.lease.sweep()
            orphans = await self.claim_orphans()
            async with self.store.engine.begin() as conn:
                await conn.execute(delete(key_runs).where(key_runs.c.instance.not_in(select(instances.c.id))))
        metrics.maintenance.labels("claim", "done").inc()
        return claimed + orphans

    async def claim_orphans(self, now: float | None = None) -> int:
        """Mark `interrupted` the unfinished runs whose instance holds no row and that showed no sign of life
        for `orphan_grace_s`; how many."""
        cutoff = (time.time() if now is None else now) - self.orphan_grace_s
        last_event = select(func.max(run_events.c.at)).where(run_events.c.run_id == runs.c.run_id).scalar_subquery()
        total = 0
        async with self.store.engine.begin() as conn:
            rows = await conn.execute(
                select(runs.c.run_id, runs.c.instance).where(
                    runs.c.status.in_(UNFINISHED_STATUSES),
                    runs.c.instance.not_in(select(instances.c.id)),
                    runs.c.created_at < cutoff,
                    or_(runs.c.started_at.is_(None), runs.c.started_at < cutoff),
                    or_(last_event.is_(None), last_event < cutoff),
                )
            )
            by_instance: dict[str, list[str]] = {}
            for run_id, instance in rows:
                by_instance.setdefault(instance, []).append(run_id)
            for instance, ids in by_instance.items():
                detail = (
                    f"The gateway process {instance!r} that ran it left no lease in the store and the run showed no "
                    f"sign of life for {self.orphan_grace_s:g} s"
                )
                total += len(await interrupt_runs(conn, ids, self.store.json(RunInterruptedError(detail).problem())))
        if total:
            self.store.metrics.claims.labels("orphan").inc(total)
            log.warning(
                "run store: %d unfinished run(s) of %d gateway process(es) without a lease marked interrupted "
                "(no sign of life for %g s)",
                total,
                len(by_instance),
                self.orphan_grace_s,
            )
        return total

    async def prune(self, now: float | None = None) -> int | None:
        """Delete runs that finished more than the retention period ago; how many, or None when another
        process holds the lock."""
        async with held(self.store.engine, PRUNE_LOCK) as mine:
            if not mine:
                self.store.metrics.maintenance.labels("prune", "skipped").inc()
                return None
            cutoff = (now or time.time()) - self.store.retention_days * 86_400
            total = 0
            while True:
                async with self.store.engine.begin() as conn:
                    ids = await _finished_before(conn, cutoff)
                    if not ids:
                        break
                    await conn.execute(delete(run_events).where(run_events.c.run_id.in_(ids)))
                    await conn.execute(delete(approvals).where(approvals.c.run_id.in_(ids)))
                    await conn.execute(delete(runs).where(runs.c.run_id.in_(ids)))
                total += len(ids)
        self.store.metrics.maintenance.labels("prune", "done").inc()
        return total

    async def run(self) -> None:
        """Claim every heartbeat period and prune every `PRUNE_EVERY_S`, for ever; a failure is logged, counted
        and tried again at the next round."""
        next_prune = 0.0
        while True:
            await asyncio.sleep(self.lease.period)
            await self._round("claiming", self.claim)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                pruned = await self._round("pruning", self.prune)
                if pruned:
                    log.info("run store: %d run(s) older than %g day(s) pruned", pruned, self.store.retention_days)

    async def _round(self, what: str, task: Any) -> int | None:
        try:
            async with asyncio.timeout(max(self.lease.lease_s, 600.0) if what == "pruning" else self.lease.lease_s):
                result: int | None = await task()
                return result
        except Exception as exc:
            self.store.metrics.store_errors.inc()
            log.warning("run store: %s failed (%s); trying again at the next round", what, exc or type(exc))
            return None


async def _finished_before(conn: AsyncConnection, cutoff: float) -> list[str]:
    rows = await conn.execute(select(runs.c.run_id).where(runs.c.finished_at < cutoff).limit(_BATCH))
    return list(rows.scalars())
