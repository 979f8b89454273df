"""The store's maintenance across gateway processes: pruning and claiming done by one process at a time (two
replicas on PostgreSQL, a forced prune held mid-way while the other tries), and the claiming of unfinished runs
whose process left no instance row (after the grace period, by one survivor, on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runs import RunStore
from services.runs import maintenance as maintenance_module
from services.runs.maintenance import CLAIM_LOCK, PRUNE_LOCK, held
from services.runs.tables import run_events, runs
from tests.services.runs.test_replicas import LONG, Stores, left_behind, terminal_events
from tests.services.runs.test_store import Driver, make_result

pytestmark = pytest.mark.timeout(60)

GRACE_S = 60.0


@pytest.fixture
async def pg_stores(postgres_url: str) -> AsyncIterator[Stores]:
    opened = Stores(postgres_url)
    yield opened
    await opened.close_all()


@pytest.fixture
async def stores(url: str) -> AsyncIterator[Stores]:
    opened = Stores(url)
    yield opened
    await opened.close_all()


def counted(stores: list[RunStore], name: str, **labels: str) -> float:
    """A counter's value summed over the stores' metrics."""
    return sum(store.metrics.registry.get_sample_value(name, labels) or 0.0 for store in stores)


async def test_two_replicas_never_prune_at_once(pg_stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = await pg_stores("gw-a", LONG), await pg_stores("gw-b", LONG)
    old = []
    for _ in range(3):
        run = Driver(a)
        run.status("running")
        run.complete(make_result(run))
        old.append(run.run_id)
    await a.flush()
    later = time.time() + a.retention_days * 86_400 + 10  # every run finished before the retention

    inside, release = asyncio.Event(), asyncio.Event()
    real = maintenance_module._finished_before

    async def held_open(conn: AsyncConnection, cutoff: float) -> list[str]:
        inside.set()
        await release.wait()  # the first prune holds its lock here, mid-way
        return await real(conn, cutoff)

    monkeypatch.setattr(maintenance_module, "_finished_before", held_open)
    first = asyncio.create_task(a.prune(now=later))
    await asyncio.wait_for(inside.wait(), 10)
    assert await b.prune(now=later) is None  # forced on B while A prunes: skipped
    assert await b.maintenance.claim() is not None  # claiming has a lock of its own
    monkeypatch.setattr(maintenance_module, "_finished_before", real)
    release.set()
    assert await first == 3
    assert await b.prune(now=later) == 0  # the lock is free again: nothing left to prune
    assert [await b.status_of(run_id) for run_id in old] == [None] * 3
    assert counted([a, b], "bridge_maintenance_total", task="prune", outcome="skipped") == 1
    assert counted([a, b], "bridge_maintenance_total", task="prune", outcome="done") == 2


async def test_a_claim_is_skipped_while_another_replica_holds_the_lock(pg_stores: Stores) -> None:
    a, b = await pg_stores("gw-a", LONG), await pg_stores("gw-b", LONG)
    async with held(a.engine, CLAIM_LOCK) as mine:
        assert mine
        assert await b.maintenance.claim() is None
        async with held(b.engine, CLAIM_LOCK) as theirs:
            assert not theirs
        async with held(b.engine, PRUNE_LOCK) as other:
            assert other  # the other lock is free
    assert await b.maintenance.claim() == 0
    assert counted([b], "bridge_maintenance_total", task="claim", outcome="skipped") == 1


async def test_runs_of_a_process_without_an_instance_row_are_claimed_after_the_grace(stores: Stores) -> None:
    old = await stores("gw-old-version")
    left = await left_behind(old)
    await stores.close(old)  # its row goes: as a process of an earlier version, it holds none
    b, c = await stores("gw-b"), await stores("gw-c")
    b.maintenance.orphan_grace_s = c.maintenance.orphan_grace_s = GRACE_S

    assert await b.maintenance.claim_orphans() == 0  # within the grace: left alone
    assert await b.status_of(left["running"].run_id) == "running"
    after = time.time() + GRACE_S + 1
    assert await b.maintenance.claim_orphans(now=after) == 2
    assert await c.maintenance.claim_orphans(now=after) == 0  # claimed once
    for name in ("running", "queued"):
        rec = await b.get(left[name].run_id)
        assert rec is not None and rec.status == "interrupted"
        assert rec.error is not None and "'gw-old-version'" in rec.error["detail"], rec.error
        [(_, event, data)] = await terminal_events(b, left[name].run_id)
        assert event == "run.failed" and data["code"] == "interrupted"
    assert await b.status_of(left["done"].run_id) == "completed"
    assert counted([b, c], "bridge_claims_total", reason="orphan") == 2


async def test_a_run_with_a_recent_event_is_not_an_orphan(stores: Stores) -> None:
    old = await stores("gw-old-version")
    run = Driver(old)
    run.status("running")
    await old.flush()
    await stores.close(old)
    b = await stores("gw-b")
    b.maintenance.orphan_grace_s = GRACE_S
    long_ago = time.time() - 2 * GRACE_S
    async with b.engine.begin() as conn:  # created and started long ago; an event written just now
        await conn.execute(
            update(runs).where(runs.c.run_id == run.run_id).values(created_at=long_ago, started_at=long_ago)
        )
        await conn.execute(
            insert(run_events).values(run_id=run.run_id, seq=1, event="round.started", data="{}", at=time.time())
        )
    assert await b.maintenance.claim_orphans() == 0
    assert await b.status_of(run.run_id) == "running"
    async with b.engine.begin() as conn:  # the event too is old now
        await conn.execute(update(run_events).where(run_events.c.run_id == run.run_id).values(at=long_ago))
    assert await b.maintenance.claim_orphans() == 1
    assert await b.status_of(run.run_id) == "interrupted"
