"""The run store's write queue and its one writer task.

Journals queue writes (`put`) and return at once; the writer commits what has queued up in one transaction
per batch: the runs inserted in it (with their later values folded in), their events, then the updates of
runs inserted before. On PostgreSQL the batch goes over the writer's own connection; on SQLite it is planned
and committed in one call to a worker thread. A failed batch is retried write by write; what still fails is
dropped, logged, counted, and its run marked `incomplete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, Executable, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.agent import RunResult
from services.metrics import Metrics
from services.runs.engines import SQLiteWriter
from services.runs.journal import EVENT, INSERT, RESULT, UPDATE, JournalEvent, RunJournal, usage_json
from services.runs.tables import run_events, runs
from services.text import storable

log = logging.getLogger("lmstudio_bridge.store")

MAX_PENDING = 50_000  # queued writes kept while the database is slow or away; beyond, writes are dropped
BATCH_WINDOW_S = 0.1  # writes gather this long before a commit: a short run becomes one INSERT, runs share commits
BATCH_FULL = 2_000  # ... unless this many are waiting, or a reader flushes


@dataclass(slots=True)
class Write:
    kind: str
    run_id: str
    values: dict[str, Any]


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


class RunWriter:
    """The store's queued writes and the task that commits them (`run`)."""

    def __init__(self, store: WriterStore) -> None:
        self.store = store
        self.pending: list[Write] = []
        self.incomplete: set[str] = set()  # runs that lost a write
        self.fenced: set[str] = set()  # runs another process recorded `interrupted`: their writes are dropped
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

    def put(self, kind: str, run_id: str, values: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.incomplete.add(run_id)
            self.store.metrics.store_dropped.inc()
            if kind == UPDATE and values.get("finished_at") is not None:
                self.store.live.pop(run_id, None)
            return
        self.pending.append(Write(kind, run_id, values))
        self._queued += 1
        self._wake.set()

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
            await self._wake.wait()
            if not self._urgent.is_set() and len(self.pending) < BATCH_FULL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), BATCH_WINDOW_S)
            self._wake.clear()
            self._urgent.clear()
            while self.pending:
                batch, self.pending = self.pending, []
                fenced = self.fenced
                await self._write_safely([write for write in batch if write.run_id not in fenced] if fenced else batch)
                self._done += len(batch)
                for write in batch:
                    if write.kind == UPDATE and write.values.get("finished_at") is not None:
                        self.store.live.pop(write.run_id, None)
                        self.incomplete.discard(write.run_id)
                        fenced.discard(write.run_id)
                async with self._progress:
                    self._progress.notify_all()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._sqlite is not None:
            await self._sqlite.close()

    async def _write_safely(self, batch: list[Write]) -> None:
        if not batch:
            return
        metrics = self.store.metrics
        try:
            await self._write(batch)
            return
        except Exception as exc:
            metrics.store_errors.inc()
            log.warning("run store: a batch of %d write(s) failed (%s); writing them one by one", len(batch), exc)
        for write in batch:  # a bad row must not hold back the others
            try:
                await self._write([write])
            except Exception as exc:
                metrics.store_errors.inc()
                metrics.store_dropped.inc()
                self.incomplete.add(write.run_id)
                log.error("run store: a %s write of run %s was lost: %s", write.kind, write.run_id, exc)

    async def _write(self, batch: list[Write]) -> None:
        if self._sqlite is not None:  # the JSON, the redaction and the commit in the writer's thread
            await self._sqlite.write(lambda: self._plan(batch))
            return
        plan = self._plan(batch)
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

    def _result_columns(self, result: RunResult) -> dict[str, Any]:
        store = self.store
        return {
            "output": store.text(result.output),
            "model": storable(result.model),
            "rounds": result.rounds,
            "usage": usage_json(result.usage),
            "warnings": store.json(result.warnings),
            "tool_calls": store.json(result.tool_calls) if result.tool_calls else None,
            "duration_ms": result.duration_ms,
            "trace_id": result.trace_id,
        }

    def _plan(self, batch: list[Write]) -> list[tuple[Executable, Any]]:
        """The statements of one batch: the runs inserted in it (with their later values), their events,
        then the updates of runs inserted before."""
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        for write in batch:
            if write.kind == INSERT:
                inserts[write.run_id] = dict(write.values)
            elif write.kind == EVENT:
                events.append({**write.values, "data": self.store.encoded(write.values["data"])})
            else:
                values = dict(write.values)
                result = values.pop(RESULT, None)
                if result is not None:
                    values |= self._result_columns(result)
                (inserts.get(write.run_id) or updates.setdefault(write.run_id, {})).update(values)
        for run_id in self.incomplete.intersection(inserts.keys() | updates.keys()):
            (inserts.get(run_id) or updates[run_id])["incomplete"] = True
        plan: list[tuple[Executable, Any]] = []
        if inserts:
            plan.append((insert(runs), list(inserts.values())))
        if events:
            plan.append((insert(run_events), events))
        plan += [  # a run recorded as ended (by another process, if it took this one for dead) stays so
            (update(runs).where(runs.c.run_id == run_id, runs.c.finished_at.is_(None)).values(values), None)
            for run_id, values in updates.items()
        ]
        return plan
