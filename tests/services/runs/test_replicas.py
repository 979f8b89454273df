"""Several gateway processes on one run store, at the store's level, on SQLite and PostgreSQL: each store's
lease (its `instances` row, renewed, removed at a clean close), the claiming of an expired instance (its
unfinished runs `interrupted`, by exactly one survivor), cancel requests from one store to another's runs,
and a store that finds its instance claimed.

A process that died is played by a row in `instances` whose heartbeat is old, beside the unfinished runs
that a store of that instance wrote (and closed without finishing). Stores that must not claim on their own
are opened with a long lease, and a claim is then made through a `Lease` with a short one."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from services.agent.records import RunEvent, step_data
from services.metrics import Metrics
from services.runs import RunStore
from services.runs.lease import Lease
from services.runs.tables import instances
from tests.helpers import eventually
from tests.services.runs.test_store import Driver, counter, make_result, make_step

pytestmark = pytest.mark.timeout(60)

LONG = 3600.0  # a lease under which nothing in a test expires on its own
SHORT = 1.0  # the shortest lease BRIDGE_LEASE_S allows
OLD = 100.0  # seconds: a heartbeat this old is past SHORT


class Stores:
    """Stores on the test's database; `close_all` closes those still open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[RunStore] = []

    async def __call__(self, instance: str, lease_s: float = LONG) -> RunStore:
        store = await RunStore.open(self.url, instance=instance, metrics=Metrics(), lease_s=lease_s)
        self.opened.append(store)
        return store

    async def close(self, store: RunStore) -> None:
        self.opened.remove(store)
        await store.aclose()

    async def close_all(self) -> None:
        while self.opened:
            await self.close(self.opened[-1])


@pytest.fixture
async def stores(url: str) -> AsyncIterator[Stores]:
    opened = Stores(url)
    yield opened
    await opened.close_all()


async def instance_rows(store: RunStore) -> dict[str, tuple[float, float]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(instances.c.id, instances.c.started_at, instances.c.heartbeat_at))
        return {name: (started, beat) for name, started, beat in rows}


async def plant(url: str, instance: str, age_s: float) -> None:
    """The row a process of `instance` would hold, its heartbeat `age_s` old."""
    now = time.time()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(instances).where(instances.c.id == instance))
            await conn.execute(insert(instances).values(id=instance, started_at=now - age_s, heartbeat_at=now - age_s))
    finally:
        await engine.dispose()


async def age(store: RunStore, instance: str, by_s: float) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            update(instances).where(instances.c.id == instance).values(heartbeat_at=instances.c.heartbeat_at - by_s)
        )


async def left_behind(store: RunStore) -> dict[str, Driver]:
    """Runs a process of `store`'s instance leaves when it dies: running with a step, queued, and completed."""
    running, queued, done = Driver(store), Driver(store), Driver(store)
    running.status("running")
    running.event(RunEvent.STARTED, {})
    running.event(RunEvent.TOOL_CALL_COMPLETED, step_data(make_step()))
    queued.status("queued")
    done.status("running")
    done.complete(make_result(done))
    await store.flush()
    return {"running": running, "queued": queued, "done": done}


async def dead_instance(stores: Stores, instance: str, age_s: float = OLD) -> dict[str, Driver]:
    """A process of `instance` that wrote runs and stopped answering `age_s` ago: its runs unfinished, its row's
    heartbeat that old."""
    store = await stores(instance)
    runs = await left_behind(store)
    await stores.close(store)  # (its row goes; `plant` puts back what a killed process leaves)
    await plant(stores.url, instance, age_s)
    return runs


async def terminal_events(store: RunStore, run_id: str) -> list[tuple[int, str, dict[str, object]]]:
    return [
        (e.seq, e.event, json.loads(e.data))
        for e in await store.events(run_id)
        if e.event in (RunEvent.COMPLETED, RunEvent.FAILED)
    ]


# --- the lease ----------------------------------------------------------------------------------------


async def test_a_store_holds_a_row_and_renews_its_heartbeat(stores: Stores) -> None:
    store = await stores("gw-a", lease_s=SHORT)
    rows = await instance_rows(store)
    assert list(rows) == ["gw-a"]
    started, first = rows["gw-a"]
    assert started <= first and abs(first - time.time()) < 5

    async def renewed() -> bool:
        return (await instance_rows(store))["gw-a"][1] > first

    await eventually(renewed, 5, "a newer heartbeat (every lease / 3)")
    assert (await instance_rows(store))["gw-a"][0] == started


async def test_a_clean_close_removes_only_its_own_row(stores: Stores) -> None:
    a, b = await stores("gw-a"), await stores("gw-b")
    assert set(await instance_rows(b)) == {"gw-a", "gw-b"}
    await stores.close(a)
    assert set(await instance_rows(b)) == {"gw-b"}


async def test_an_expired_instance_has_its_runs_interrupted_by_a_survivor(
    stores: Stores,
) -> None:
    runs = await dead_instance(stores, "gw-dead")
    survivor = await stores("gw-alive", lease_s=SHORT)  # its heartbeats look for expired rows

    async def interrupted() -> bool:
        return await survivor.status_of(runs["running"].run_id) == "interrupted"

    await eventually(interrupted, 5, "the dead instance's running run interrupted")
    record = await survivor.get(runs["running"].run_id)
    assert record is not None and record.error is not None and record.finished_at is not None
    assert record.error["code"] == "interrupted" and "'gw-dead'" in record.error["detail"], record.error
    assert "stopped answering" in record.error["detail"]
    assert record.steps == [make_step()] and record.rounds == 1
    events = await survivor.events(runs["running"].run_id)
    assert [(e.seq, e.event) for e in events] == [
        (1, RunEvent.STARTED),
        (2, RunEvent.TOOL_CALL_COMPLETED),
        (3, RunEvent.FAILED),
    ]
    assert json.loads(events[-1].data) == record.error
    assert await survivor.status_of(runs["queued"].run_id) == "interrupted"
    assert [(e.seq, e.event) for e in await survivor.events(runs["queued"].run_id)] == [(1, RunEvent.FAILED)]
    assert await survivor.status_of(runs["done"].run_id) == "completed"
    assert [e for _, e, _ in await terminal_events(survivor, runs["done"].run_id)] == [RunEvent.COMPLETED]
    assert set(await instance_rows(survivor)) == {"gw-alive"}  # the dead one's row went with the claim


async def test_a_fresh_instance_is_left_alone_until_its_heartbeat_is_older_than_the_lease(
    stores: Stores,
) -> None:
    runs = await dead_instance(stores, "gw-slow", SHORT / 2)  # late, but within the lease
    survivor = await stores("gw-b")
    lease = Lease(survivor, SHORT)
    assert await lease.sweep() == 0
    assert await survivor.status_of(runs["running"].run_id) == "running"
    assert "gw-slow" in await instance_rows(survivor)

    await age(survivor, "gw-slow", SHORT)  # now older than the lease
    assert await lease.sweep() == 1
    claimed = survivor.metrics.registry.get_sample_value("bridge_claims_total", {"reason": "lease"})
    assert claimed == 2  # its running and its queued run
    assert await survivor.status_of(runs["running"].run_id) == "interrupted"
    assert await survivor.status_of(runs["queued"].run_id) == "interrupted"
    assert await lease.sweep() == 0  # claimed once


async def test_two_survivors_racing_claim_each_expired_instance_exactly_once(
    stores: Stores,
) -> None:
    dead = {f"gw-dead-{i}": await dead_instance(stores, f"gw-dead-{i}") for i in range(4)}
    b, c = await stores("gw-b"), await stores("gw-c")
    claims = await asyncio.gather(*[Lease(s, SHORT).claim(name) for name in dead for s in (b, c)])
    for i, (name, runs) in enumerate(dead.items()):
        won = [ids for ids in claims[2 * i : 2 * i + 2] if ids is not None]
        assert len(won) == 1, (name, claims)
        assert sorted(won[0]) == sorted([runs["running"].run_id, runs["queued"].run_id])

    more = {f"gw-gone-{i}": await dead_instance(stores, f"gw-gone-{i}") for i in range(4)}
    # a lease between the survivors' age and the dead ones': only the dead are late, however long setting up took
    # (with SHORT, a busy machine let the survivors' own rows pass 1 s and they were swept too)
    swept = await asyncio.gather(Lease(b, OLD / 2).sweep(), Lease(c, OLD / 2).sweep())
    assert sum(swept) == len(more), swept

    for runs in [*dead.values(), *more.values()]:
        for key in ("running", "queued"):
            ends = await terminal_events(b, runs[key].run_id)
            assert [(event, data["code"]) for _, event, data in ends] == [(RunEvent.FAILED, "interrupted")], ends
    assert set(await instance_rows(b)) == {"gw-b", "gw-c"}


# --- cancel requests ------------------------------------------------------------------------------------


async def test_a_cancel_request_through_one_store_reaches_the_owner_once(
    stores: Stores,
) -> None:
    owner, other = await stores("gw-a"), await stores("gw-b")
    running, queued, done = Driver(owner), Driver(owner), Driver(owner)
    running.status("running")
    queued.status("queued")
    done.status("running")
    done.complete(make_result(done))
    await owner.flush()

    assert await other.request_cancel(running.run_id) is True
    assert await asyncio.wait_for(owner.cancel_requests.get(), 5) == running.run_id  # the owner is told
    assert await other.request_cancel(queued.run_id) is True
    assert await asyncio.wait_for(owner.cancel_requests.get(), 5) == queued.run_id  # the queued run's too
    assert await owner.relay.check() == []  # each request is handed on once
    assert owner.cancel_requests.empty()

    assert await other.request_cancel(done.run_id) is False  # ended: nothing to ask
    assert await other.request_cancel("run_unknown") is False
    running.fail("cancelled", "The run was cancelled.")  # the owner ends it
    await owner.flush()
    assert await other.request_cancel(running.run_id) is False
    assert await other.status_of(running.run_id) == "cancelled"


async def test_a_store_whose_instance_was_claimed_stops_its_runs_and_keeps_the_verdict(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    stalled = await stores("gw-a")
    run = Driver(stalled)
    run.status("running")
    run.event(RunEvent.STARTED, {})
    await stalled.flush()
    survivor = await stores("gw-b")
    await age(stalled, "gw-a", OLD)  # it stalled for longer than the lease
    assert await Lease(survivor, SHORT).claim("gw-a") == [run.run_id]

    assert await stalled.lease.renew() is False  # it comes back and finds its row gone
    assert stalled.cancel_requests.get_nowait() == run.run_id and stalled.cancel_requests.empty()
    assert "another one took over instance 'gw-a'" in caplog.text
    assert "gw-a" in await instance_rows(survivor)  # registered again
    assert await stalled.lease.renew() is True

    run.event(RunEvent.MESSAGE, {"content": "late"})  # what the stopped run still writes is dropped
    run.fail("cancelled", "The run was cancelled.")
    await stalled.flush()
    record = await survivor.get(run.run_id)
    assert record is not None and record.status == "interrupted", record
    assert [(e.seq, e.event) for e in await survivor.events(run.run_id)] == [(1, RunEvent.STARTED), (2, "run.failed")]
    assert counter(stalled.metrics, "bridge_store_errors_total") == 0
    assert counter(stalled.metrics, "bridge_leases_lost_total") == 1
    assert run.run_id not in stalled.live

    after = Driver(stalled)  # its new runs are written as ever
    after.status("running")
    after.complete(make_result(after))
    await stalled.flush()
    assert await survivor.status_of(after.run_id) == "completed"


async def test_a_second_process_with_the_same_instance_id_is_reported(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    first = await stores("gw-twin")
    assert "BRIDGE_INSTANCE_ID" not in caplog.text
    await stores("gw-twin")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "BRIDGE_INSTANCE_ID" in r.message]
    assert len(warnings) == 1 and "'gw-twin'" in warnings[0].message, caplog.text
    assert await first.lease.renew() is False  # the first one finds its row taken by the twin
    assert "another gateway process registered as instance 'gw-twin'" in caplog.text

    caplog.clear()
    await plant(stores.url, "gw-restarted", OLD)  # a row a killed process left a lease ago: no warning
    await stores("gw-restarted", lease_s=SHORT)
    assert "BRIDGE_INSTANCE_ID" not in caplog.text


async def test_a_failed_heartbeat_is_logged_counted_and_retried(
    stores: Stores, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores("gw-a", lease_s=SHORT)
    real = store.lease.renew
    failures: list[float] = []

    async def flaky() -> bool:
        if len(failures) < 2:
            failures.append(time.monotonic())
            raise ConnectionError("database away")
        return await real()

    monkeypatch.setattr(store.lease, "renew", flaky)
    await eventually(lambda: len(failures) == 2, 5, "two failed heartbeats")
    before = (await instance_rows(store))["gw-a"][1]

    async def renewed() -> bool:
        return (await instance_rows(store))["gw-a"][1] > before

    await eventually(renewed, 5, "a heartbeat after the failures")
    assert counter(store.metrics, "bridge_store_errors_total") >= 2
    assert "heartbeat failed (database away)" in caplog.text


async def test_a_follower_reads_only_what_the_store_holds_and_then_the_claimers_end(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live follower gets an event once it is committed: a process that dies (here: stalls, its writer stuck)
    after emitting events never showed one that the store lacks, so the `run.failed` a claimer appends after the
    stored ones reaches the follower, numbered after what it read."""
    stalled = await stores("gw-a")
    run = Driver(stalled)
    run.status("running")
    run.event(RunEvent.STARTED, {})
    await stalled.flush()
    read: list[tuple[int, str]] = []

    async def follow() -> None:
        async for item in stalled.follow(run.run_id):
            read.append((item.seq, item.event))

    follower = asyncio.create_task(follow())
    await eventually(lambda: read == [(1, RunEvent.STARTED)], 5, "the committed event read")
    stuck, inside = asyncio.Event(), asyncio.Event()
    real = stalled.writer._write

    async def never(_batch: list[Any]) -> None:
        inside.set()
        await stuck.wait()  # the writer hangs (a stalled process): nothing more is committed

    monkeypatch.setattr(stalled.writer, "_write", never)
    run.event(RunEvent.ROUND_STARTED, {"round": 1})
    run.event(RunEvent.TOOL_CALL_STARTED, {"round": 1})
    await asyncio.wait_for(inside.wait(), 5)
    assert read == [(1, RunEvent.STARTED)]  # emitted, not committed: not shown

    survivor = await stores("gw-b")
    await age(stalled, "gw-a", OLD)
    assert await Lease(survivor, SHORT).claim("gw-a") == [run.run_id]
    assert await stalled.lease.renew() is False  # it finds its row gone: the run is fenced
    await asyncio.wait_for(follower, 10)  # read on from the store
    assert read == [(1, RunEvent.STARTED), (2, RunEvent.FAILED)]
    assert [(e.seq, e.event) for e in await survivor.events(run.run_id)] == read
    monkeypatch.setattr(stalled.writer, "_write", real)
    stuck.set()
