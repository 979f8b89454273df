"""The run store's write queue and its one writer task.

Journals queue writes (`put`) and return at once; the writer commits what has queued up in one transaction
per batch: the runs inserted in it (with their later values folded in), their events, then the updates of
runs inserted before. On PostgreSQL the batch goes over the writer's own connection; on SQLite it is planned
and committed in one call to a worker thread. A failed batch is retried write by write; a run whose write
still fails is held: its record is served from its journal in memory (`held.py`), its further writes wait
there, and every RETRY_S the writer tries to write it back whole (marked `incomplete`); the first write that
succeeds makes the store healthy again (`health`). A SQLite file deleted or replaced under the gateway is
found before the next batch (or within CHECK_S when idle): the store is opened again at its path and the
runs of this process are written back from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Engine, Executable, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.aio import wait_set
from services.metrics import Metrics
from services.runs.engines import SQLiteWriter, StoreFileGoneError
from services.runs.held import Write, plan_of, write_back
from services.runs.journal import EVENT, INSERT, UPDATE, JournalEvent, RunJournal
from services.runs.tables import instances

log = logging.getLogger("lmstudio_bridge.store")

MAX_PENDING = 50_000  # queued writes kept while the database is slow or away; beyond, writes are dropped
BATCH_WINDOW_S = 0.1  # writes gather this long before a commit: a short run becomes one INSERT, runs share commits
BATCH_FULL = 2_000  # ... unless this many are waiting, or a reader flushes
RETRY_S = 1.0  # while writes fail: how often the held runs are written back (or the store probed)
CHECK_S = 5.0  # while idle: how often a SQLite store's file is checked (deleted or replaced?)


@dataclass(slots=True)
class StoreHealth:
    """Whether the run store takes writes (`/readyz`)."""

    ok: bool
    backend: str
    error: str | None = None
    failing_s: float | None = None  # how long writes have failed
    held_runs: int = 0  # runs whose record is in memory only
    backlog: int = 0  # writes queued


class WriterStore(Protocol):
    """What the writer needs of its store (`RunStore`): the database, the counters, how values become stored
    text, and the runs followed live (a run is dropped from them once its last write is done)."""

    live: dict[str, RunJournal]

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def metrics(self) -> Metrics: ...

    def json(self, value: Any) -> str: ...

    def text(self, value: str) -> str: ...

    def encoded(self, item: JournalEvent) -> str: ...

    @property
    def instance(self) -> str: ...

    async def reopen(self) -> None: ...


class RunWriter:
    """The store's queued writes and the task that commits them (`run`)."""

    def __init__(self, store: WriterStore) -> None:
        self.store = store
        self.pending: list[Write] = []
        self.incomplete: set[str] = set()  # runs that lost a write
        self.held: dict[str, RunJournal] = {}  # runs whose record is in memory only, until written back
        self.fenced: set[str] = set()  # runs another process recorded `interrupted`: their writes are dropped
        self.failing_since: float | None = None  # monotonic time of the first failed write of this outage
        self.last_error: str | None = None
        self._last_exc: BaseException | None = None
        self._reopens = 0  # times the SQLite file was found deleted or replaced and the store opened again
        self._queued = 0  # writes ever queued
        self._done = 0  # writes ever finished (written or dropped)
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # a reader waits: write now
        self._progress = asyncio.Condition()
        self._conn: AsyncConnection | None = None  # the writer's own connection (PostgreSQL)
        # SQLite: a batch is committed in one call to a worker thread (aiosqlite would hop threads per statement)
        engine = store.engine
        self._sqlite = SQLiteWriter(engine.url) if engine.dialect.name == "sqlite" else None

    @property
    def engine(self) -> Engine:
        """The (sync) engine the writes go through: the SQLite writer's, or the async engine's core."""
        return self._sqlite.engine if self._sqlite is not None else self.store.engine.sync_engine

    def health(self) -> StoreHealth:
        failing = self.failing_since
        return StoreHealth(
            ok=failing is None,
            backend=self.store.engine.dialect.name,
            error=self.last_error,
            failing_s=round(time.monotonic() - failing, 1) if failing is not None else None,
            held_runs=len(self.held),
            backlog=len(self.pending),
        )

    def put(self, kind: str, run_id: str, values: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.incomplete.add(run_id)
            self.store.metrics.store_dropped.inc()
            journal = self.store.live.get(run_id)
            if journal is not None:  # its record stays in memory, written back later
                self.held[run_id] = journal
                if kind == EVENT:
                    journal.settle(1)  # kept by the journal: its followers read it from there
            if kind == UPDATE and values.get("finished_at") is not None:
                self.store.live.pop(run_id, None)
            return
        self.pending.append(Write(kind, run_id, values, self._queued))
        self._queued += 1
        self._wake.set()

    def forget(self, run_id: str) -> None:
        """Drop the run's further writes and its record in memory (a run refused before it was answered)."""
        self.held.pop(run_id, None)
        self.store.live.pop(run_id, None)
        self.fenced.add(run_id)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or dropped)."""
        target = self._queued
        if self._done >= target:
            return
        self._urgent.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def run(self) -> None:
        while True:
            await self._next()
            while self.pending:
                batch, self.pending = self.pending, []
                skip = self.fenced | self.held.keys()  # a held run's writes wait in its journal
                kept = [write for write in batch if write.run_id not in skip] if skip else batch
                lost = await self._write_safely(kept)
                self._settle_events(batch)  # before `_settle`, which forgets the runs that ended
                self._settle(batch, kept, lost)
                self._done += len(batch)
                async with self._progress:
                    self._progress.notify_all()
            if self.held or self.failing_since is not None:
                await self._recover()

    async def _next(self) -> None:
        """Wait for writes (gathered for BATCH_WINDOW_S), or RETRY_S while writes fail, or CHECK_S when idle."""
        troubled = bool(self.held) or self.failing_since is not None
        if not await wait_set(self._wake, RETRY_S if troubled else CHECK_S):
            if not troubled and self._sqlite is not None:
                await self._guarded(self._sqlite.check)
            return
        if not self._urgent.is_set() and len(self.pending) < BATCH_FULL:
            await wait_set(self._urgent, BATCH_WINDOW_S)
        self._wake.clear()
        self._urgent.clear()

    def _settle(self, batch: list[Write], kept: list[Write], lost: list[Write]) -> None:
        live, lost_ids = self.store.live, {id(write) for write in lost}
        for write in kept:
            journal = live.get(write.run_id)
            if id(write) in lost_ids:
                self.incomplete.add(write.run_id)
                if journal is not None:
                    self.held[write.run_id] = journal
            elif write.kind == INSERT and journal is not None:
                journal.durable = True
        for write in batch:
            if write.kind == UPDATE and write.values.get("finished_at") is not None:
                live.pop(write.run_id, None)
                self.fenced.discard(write.run_id)
                if write.run_id not in self.held:
                    self.incomplete.discard(write.run_id)

    async def _recover(self) -> None:
        """Write the held runs back whole, each in one transaction; with none held, probe the store."""
        dialect = self.store.engine.dialect.name
        for journal in list(self.held.values()):
            mark, plan = self._queued, write_back(self.store, dialect, journal)  # the journal holds the writes before
            if await self._guarded(partial(self._write_plan, plan)):
                self._release(journal, mark)
                continue
            if isinstance(self._last_exc, OperationalError | OSError) or not await self._probe():
                return  # the store takes no writes (full, read-only, locked, away): again in RETRY_S
            # the store takes writes, but not all of this run's (a row it refuses): what it takes, piece by piece
            mark = self._queued
            for piece in write_back(self.store, dialect, journal, chunk=1):
                if not await self._guarded(partial(self._write_plan, [piece])):
                    self.store.metrics.store_dropped.inc()
            self._healthy()
            self._release(journal, mark)
        if self.failing_since is not None:
            await self._probe()
        async with self._progress:  # writes covered by a write-back are done: wake the readers waiting for them
            self._progress.notify_all()

    async def _probe(self) -> bool:
        """A real write (an UPDATE of nothing would pass on a full disk): this instance's lease row, unchanged."""
        probe = update(instances).where(instances.c.id == self.store.instance)
        return await self._guarded(
            lambda: self._write_plan([(probe.values(heartbeat_at=instances.c.heartbeat_at), None)])
        )

    def _release(self, journal: RunJournal, mark: int) -> None:
        """The run was written back as its journal stood when `mark` writes had been queued: its writes queued
        before are done, the later ones go as usual."""
        run_id = journal.run_id
        covered = [w for w in self.pending if w.run_id == run_id and w.n < mark]
        if covered:
            self.pending = [w for w in self.pending if not (w.run_id == run_id and w.n < mark)]
            self._done += len(covered)
        if self.held.get(run_id) is journal:
            del self.held[run_id]
            if journal.done:
                self.store.live.pop(run_id, None)
            log.warning("run store: run %s, kept in memory, was written back (marked incomplete)", journal.run_id)

    async def _guarded(self, write: Callable[[], Any]) -> bool:
        """Run a write (or a check); True when it passed. A failure is noted; a SQLite file deleted or replaced
        opens the store again and holds this process's runs for writing back."""
        try:
            await write()
        except StoreFileGoneError as exc:
            self._failing(exc)
            await self._reopen(exc)
            return False
        except Exception as exc:
            self.store.metrics.store_errors.inc()
            self._failing(exc)
            return False
        self._healthy()
        return True

    async def _reopen(self, gone: StoreFileGoneError) -> None:
        log.error(
            "run store: %s: opening the store again at its path; the runs recorded in the old file are gone with "
            "it, those of this process are written back from memory",
            gone,
        )
        try:
            await self.store.reopen()
        except Exception as exc:
            log.error("run store: the store could not be opened again (%s); trying again in %g s", exc, RETRY_S)
            return
        assert self._sqlite is not None
        await self._sqlite.reset()
        self._reopens += 1
        for run_id, journal in self.store.live.items():
            self.incomplete.add(run_id)
            self.held[run_id] = journal

    def _failing(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.error("run store: writes fail (%s): runs are kept in memory until it takes writes again", exc)
        self.last_error, self._last_exc = str(exc) or type(exc).__name__, exc

    def _healthy(self) -> None:
        if self.failing_since is not None:
            log.warning("run store: takes writes again after %.1f s", time.monotonic() - self.failing_since)
        self.failing_since, self.last_error = None, None

    def _settle_events(self, batch: list[Write]) -> None:
        """Tell each run's journal how many of its events this batch committed (or held, or dropped)."""
        for run_id, count in Counter(write.run_id for write in batch if write.kind == EVENT).items():
            if (journal := self.store.live.get(run_id) or self.held.get(run_id)) is not None:
                journal.settle(count)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._sqlite is not None:
            await self._sqlite.close()

    async def _write_safely(self, batch: list[Write]) -> list[Write]:
        """Write the batch; the writes that failed even alone (after one try of the whole batch)."""
        if not batch:
            return []
        metrics, reopens = self.store.metrics, self._reopens
        if await self._guarded(lambda: self._write(batch)):
            return []
        if self._reopens != reopens:  # the file was gone: the store is open again, its runs held for writing back
            return list(batch)
        log.warning(
            "run store: a batch of %d write(s) failed (%s); writing them one by one", len(batch), self.last_error
        )
        lost = []
        for write in batch:  # a bad row must not hold back the others
            if write.run_id in self.held:  # an earlier write of its run failed: this one waits in memory too
                lost.append(write)
                continue
            if not await self._guarded(partial(self._write, [write])):
                metrics.store_dropped.inc()
                lost.append(write)
                journal = self.store.live.get(write.run_id)
                if journal is not None:
                    self.held[write.run_id] = journal
                log.error("run store: a %s write of run %s was lost: %s", write.kind, write.run_id, self.last_error)
        return lost

    async def _write_plan(self, plan: list[tuple[Executable, Any]]) -> None:
        if self._sqlite is not None:
            await self._sqlite.write(lambda: plan)
            return
        await self._execute(plan)

    async def _write(self, batch: list[Write]) -> None:
        if self._sqlite is not None:  # the JSON, the redaction and the commit in the writer's thread
            await self._sqlite.write(lambda: plan_of(self.store, batch, self.incomplete))
            return
        await self._execute(plan_of(self.store, batch, self.incomplete))

    async def _execute(self, plan: list[tuple[Executable, Any]]) -> None:
        if self._conn is None:
            self._conn = await self.store.engine.connect()
        conn = self._conn
        try:
            async with conn.begin():
                for statement, params in plan:
                    await conn.execute(statement, params)
        except Exception:
            self._conn = None  # a broken connection is not reused; the next batch opens another
            with contextlib.suppress(Exception):
                await conn.close()
            raise
