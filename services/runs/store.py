"""The run store: every run's record and events in SQLite (default) or PostgreSQL, written off the hot path.

A run hands its writes to its `RunJournal`, which queues them and returns at once; one writer task
commits what has queued up in one transaction per batch (a run that starts and ends within a batch
becomes one INSERT). Readers call `flush()` first, so they see everything written before they asked.
A failed batch is retried row by row; what still fails is dropped, logged, counted, and the run's
record is marked `incomplete`. Runs live in this process are followed from memory, others from the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Executable,
    Select,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.agent import FINISHED_STATUSES, UNFINISHED_STATUSES, Run, RunEvent, RunResult, Step
from services.agent.records import TERMINAL_EVENTS, RoundReasoning, result_json, stage_of
from services.errors import RunInterruptedError
from services.lmstudio import Usage
from services.metrics import Metrics
from services.runs.engines import SQLiteWriter, async_engine
from services.runs.journal import EVENT, INSERT, RESULT, UPDATE, JournalEvent, RunJournal, usage_json
from services.runs.migrate import migrate
from services.runs.records import RunPage, RunRecord, StoredEvent
from services.runs.tables import run_events, runs
from services.text import storable

log = logging.getLogger("lmstudio_bridge.store")

MAX_PENDING = 50_000  # queued writes kept while the database is slow or away; beyond, writes are dropped
BATCH_WINDOW_S = 0.1  # writes gather this long before a commit: a short run becomes one INSERT, runs share commits
BATCH_FULL = 2_000  # ... unless this many are waiting, or a reader flushes
POLL_S = 0.5  # how often a follower of a run in another gateway process looks for new events
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class RunFilter:
    """`GET /v1/runs` filters; None matches everything."""

    status: str | None = None
    model: str | None = None
    server: str | None = None
    since: datetime | None = None
    key_name: str | None = None


@dataclass(slots=True)
class _Write:
    kind: str
    run_id: str
    values: dict[str, Any]


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class RunStore:
    """Records runs; see the module docstring. Open with `RunStore.open(url, ...)`, close with `aclose`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        instance: str,
        metrics: Metrics,
        redact: Callable[[str], str] = lambda text: text,
        retention_days: float = 30.0,
    ) -> None:
        self.engine = engine
        self.instance = instance
        self.metrics = metrics
        self.redact = redact
        self.retention_days = retention_days
        self.live: dict[str, RunJournal] = {}  # runs of this process whose terminal event is not written yet
        self._pending: list[_Write] = []
        self._incomplete: set[str] = set()
        self._queued = 0  # writes ever queued
        self._done = 0  # writes ever finished (written or dropped)
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # a reader waits: write now
        self._progress = asyncio.Condition()
        self._conn: AsyncConnection | None = None  # the writer's own connection (PostgreSQL)
        # SQLite: a batch is committed in one call to a worker thread (aiosqlite would hop threads per statement)
        self._sqlite_writer = SQLiteWriter(engine.url) if engine.dialect.name == "sqlite" else None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        instance: str,
        metrics: Metrics,
        redact: Callable[[str], str] = lambda text: text,
        retention_days: float = 30.0,
    ) -> RunStore:
        """Connect, migrate, mark the runs a previous process left unfinished `interrupted`, start writing."""
        engine = async_engine(url)
        try:
            await migrate(engine)
            store = cls(engine, instance=instance, metrics=metrics, redact=redact, retention_days=retention_days)
            interrupted = await store._interrupt_leftovers()
        except BaseException:
            await engine.dispose()
            raise
        if interrupted:
            log.warning("%d run(s) left unfinished by an earlier start were marked interrupted", interrupted)
        store._tasks = [asyncio.create_task(store._writer()), asyncio.create_task(store._pruner())]
        return store

    async def aclose(self) -> None:
        """Write what is queued, stop the background tasks, close the connections."""
        try:
            await asyncio.wait_for(self.flush(), 30.0)
        except TimeoutError:
            log.error("the run store could not write %d queued change(s) before closing", len(self._pending))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self.engine.dispose()

    # --- writing -------------------------------------------------------------------

    def journal(self, run: Run) -> RunJournal:
        """The run's journal; the run is written (and followed live) from its first status on."""
        return RunJournal(self, run, run.spec.access.name if run.spec.access is not None else None)

    def json(self, value: Any) -> str:
        """`value` as JSON text for the store: secrets redacted (non-ASCII kept as is, so they match)."""
        return self.redact(storable(json.dumps(value, default=str, ensure_ascii=False)))

    def text(self, value: str) -> str:
        return self.redact(storable(value))

    def encoded(self, item: JournalEvent) -> str:
        """The event's JSON text as stored (computed once; the same for the database and live followers)."""
        if item.text is None:
            data = item.data
            if isinstance(data, RunResult):
                item.text = self.redact(storable(result_json(data).decode()))
            else:
                item.text = data if isinstance(data, str) else self.json(data)
        return item.text

    def _result_columns(self, result: RunResult) -> dict[str, Any]:
        return {
            "output": self.text(result.output),
            "model": storable(result.model),
            "rounds": result.rounds,
            "usage": usage_json(result.usage),
            "warnings": self.json(result.warnings),
            "tool_calls": self.json(result.tool_calls) if result.tool_calls else None,
            "duration_ms": result.duration_ms,
            "trace_id": result.trace_id,
        }

    def put(self, kind: str, run_id: str, values: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._incomplete.add(run_id)
            self.metrics.store_dropped.inc()
            if kind == UPDATE and values.get("finished_at") is not None:
                self.live.pop(run_id, None)
            return
        self._pending.append(_Write(kind, run_id, values))
        self._queued += 1
        self._wake.set()

    @property
    def writer_engine(self) -> Engine:
        """The (sync) engine the writes go through: the SQLite writer's, or the async engine's core."""
        return self._sqlite_writer.engine if self._sqlite_writer is not None else self.engine.sync_engine

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or dropped)."""
        target = self._queued
        if self._done >= target:
            return
        self._urgent.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set() and len(self._pending) < BATCH_FULL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), BATCH_WINDOW_S)
            self._wake.clear()
            self._urgent.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write_safely(batch)
                self._done += len(batch)
                for write in batch:
                    if write.kind == UPDATE and write.values.get("finished_at") is not None:
                        self.live.pop(write.run_id, None)
                        self._incomplete.discard(write.run_id)
                async with self._progress:
                    self._progress.notify_all()

    async def _write_safely(self, batch: list[_Write]) -> None:
        try:
            await self._write(batch)
            return
        except Exception as exc:
            self.metrics.store_errors.inc()
            log.warning("run store: a batch of %d write(s) failed (%s); writing them one by one", len(batch), exc)
        for write in batch:  # a bad row must not hold back the others
            try:
                await self._write([write])
            except Exception as exc:
                self.metrics.store_errors.inc()
                self.metrics.store_dropped.inc()
                self._incomplete.add(write.run_id)
                log.error("run store: a %s write of run %s was lost: %s", write.kind, write.run_id, exc)

    async def _write(self, batch: list[_Write]) -> None:
        if self._sqlite_writer is not None:  # the JSON, the redaction and the commit in the writer's thread
            await self._sqlite_writer.write(lambda: self._plan(batch))
            return
        plan = self._plan(batch)
        if self._conn is None:
            self._conn = await self.engine.connect()
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

    def _plan(self, batch: list[_Write]) -> list[tuple[Executable, Any]]:
        """The statements of one batch: the runs inserted in it (with their later values), their events,
        then the updates of runs inserted before."""
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        for write in batch:
            if write.kind == INSERT:
                inserts[write.run_id] = dict(write.values)
            elif write.kind == EVENT:
                events.append({**write.values, "data": self.encoded(write.values["data"])})
            else:
                values = dict(write.values)
                result = values.pop(RESULT, None)
                if result is not None:
                    values |= self._result_columns(result)
                (inserts.get(write.run_id) or updates.setdefault(write.run_id, {})).update(values)
        for run_id in self._incomplete.intersection(inserts.keys() | updates.keys()):
            (inserts.get(run_id) or updates[run_id])["incomplete"] = True
        plan: list[tuple[Executable, Any]] = []
        if inserts:
            plan.append((insert(runs), list(inserts.values())))
        if events:
            plan.append((insert(run_events), events))
        plan += [
            (update(runs).where(runs.c.run_id == run_id).values(values), None) for run_id, values in updates.items()
        ]
        return plan

    # --- reading -------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord | None:
        await self.flush()
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.run_id == run_id))).mappings().first()
            if row is None:
                return None
            rows = await conn.execute(
                select(run_events.c.event, run_events.c.data)
                .where(run_events.c.run_id == run_id, run_events.c.event.in_(_RECORD_EVENTS))
                .order_by(run_events.c.seq)
            )
            record = _record(row)
            for name, data in rows:
                _add_to_record(record, name, json.loads(data))
        return record

    async def page(self, filters: RunFilter, limit: int, cursor: str | None) -> RunPage:
        """Runs newest first; `cursor` is the `next_cursor` of the page before."""
        await self.flush()
        query: Select[Any] = select(runs).order_by(runs.c.num.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(runs.c.num < int(cursor))
        if filters.status is not None:
            query = query.where(runs.c.status == filters.status)
        if filters.model is not None:
            query = query.where(runs.c.model == filters.model)
        if filters.server is not None:
            query = query.where(_has_server(filters.server))
        if filters.since is not None:
            # times are shown to the microsecond: half a microsecond of slack keeps a run's own created_at in
            query = query.where(runs.c.created_at >= filters.since.timestamp() - 0.5e-6)
        if filters.key_name is not None:
            query = query.where(runs.c.key_name == filters.key_name)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        more = len(rows) > limit
        rows = rows[:limit]
        return RunPage([_record(row) for row in rows], str(rows[-1]["num"]) if more else None)

    async def events(self, run_id: str, after: int = 0) -> list[StoredEvent]:
        await self.flush()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(run_events.c.seq, run_events.c.event, run_events.c.data)
                .where(run_events.c.run_id == run_id, run_events.c.seq > after)
                .order_by(run_events.c.seq)
            )
            return [StoredEvent(seq, name, data) for seq, name, data in rows]

    async def last_event(self, run_id: str) -> StoredEvent | None:
        await self.flush()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(run_events.c.seq, run_events.c.event, run_events.c.data)
                    .where(run_events.c.run_id == run_id)
                    .order_by(run_events.c.seq.desc())
                    .limit(1)
                )
            ).first()
        return StoredEvent(*row) if row else None

    async def status_of(self, run_id: str) -> str | None:
        found = await self.status_and_key(run_id)
        return found[0] if found else None

    async def status_and_key(self, run_id: str) -> tuple[str, str | None] | None:
        """The run's status and its API key's name; None when there is no such run."""
        await self.flush()
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs.c.status, runs.c.key_name).where(runs.c.run_id == run_id))).first()
        return (row[0], row[1]) if row else None

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[StoredEvent]:
        """The run's events after `after`, then new ones as they come, until the terminal event."""
        journal = self.live.get(run_id)
        if journal is not None:
            async for item in journal.follow(after):
                yield item
            return
        while True:  # not in this process: what the database has, polled while another process runs it
            for item in await self.events(run_id, after):
                yield item
                after = item.seq
                if item.event in TERMINAL_EVENTS:
                    return
            status = await self.status_of(run_id)
            if status is None or status in FINISHED_STATUSES:
                return
            await asyncio.sleep(POLL_S)

    async def delete(self, run_id: str) -> bool:
        await self.flush()
        async with self.engine.begin() as conn:
            await conn.execute(delete(run_events).where(run_events.c.run_id == run_id))
            deleted = await conn.execute(delete(runs).where(runs.c.run_id == run_id))
        return bool(deleted.rowcount)

    async def prune(self, now: float | None = None) -> int:
        """Delete runs that finished more than the retention period ago; returns how many."""
        cutoff = (now or time.time()) - self.retention_days * 86_400
        total = 0
        while True:
            async with self.engine.begin() as conn:
                ids = (
                    (await conn.execute(select(runs.c.run_id).where(runs.c.finished_at < cutoff).limit(500)))
                    .scalars()
                    .all()
                )
                if not ids:
                    return total
                await conn.execute(delete(run_events).where(run_events.c.run_id.in_(ids)))
                await conn.execute(delete(runs).where(runs.c.run_id.in_(ids)))
            total += len(ids)

    async def _pruner(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("run store: %d run(s) older than %g day(s) pruned", pruned, self.retention_days)
            except Exception as exc:
                self.metrics.store_errors.inc()
                log.warning("run store: pruning failed: %s", exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def _interrupt_leftovers(self) -> int:
        """Runs of this instance found queued/running: `interrupted`, with a terminal `run.failed` event.
        Their end is the time of their last event; their rounds are those their recorded steps reached."""
        now = time.time()
        data = self.json(RunInterruptedError("The gateway stopped while the run was in progress").problem())
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                select(runs.c.run_id, runs.c.started_at, runs.c.created_at).where(
                    runs.c.status.in_(UNFINISHED_STATUSES), runs.c.instance == self.instance
                )
            )
            leftovers = {run_id: started or created for run_id, started, created in rows}
            if not leftovers:
                return 0
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
            for run_id, started in leftovers.items():
                last_seq, last_at = ends.get(run_id, (0, None))
                finished = last_at or now
                await conn.execute(
                    insert(run_events).values(run_id=run_id, seq=last_seq + 1, event=RunEvent.FAILED, data=data, at=now)
                )
                await conn.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id)
                    .values(
                        status="interrupted",
                        finished_at=finished,
                        duration_ms=round(max(0.0, finished - started) * 1000, 2),
                        rounds=rounds.get(run_id, 0),
                        error=data,
                    )
                )
        return len(leftovers)


# the events a record's steps, reasoning and (pipelines) stages are rebuilt from
_RECORD_EVENTS = (RunEvent.TOOL_CALL_COMPLETED, RunEvent.REASONING, RunEvent.STEP_COMPLETED, RunEvent.COMPLETED)
_STEP_FIELDS = frozenset(Step.__dataclass_fields__)
_REASONING_FIELDS = frozenset(RoundReasoning.__dataclass_fields__)


def _add_to_record(record: RunRecord, event: str, data: dict[str, Any]) -> None:
    """One stored event's part of the record (a pipeline's events also say which step they belong to)."""
    if event == RunEvent.TOOL_CALL_COMPLETED:
        record.steps.append(Step(**{k: v for k, v in data.items() if k in _STEP_FIELDS}))
    elif event == RunEvent.REASONING:
        record.reasoning.append(RoundReasoning(**{k: v for k, v in data.items() if k in _REASONING_FIELDS}))
    elif event == RunEvent.STEP_COMPLETED:
        record.stages.append(stage_of(data["result"]))
    else:
        record.ended_by = data.get("ended_by")


def _has_server(name: str) -> ColumnElement[bool]:
    """Whether the JSON list `["a", "b"]` in `mcp_servers` holds `name` as a whole element: the element's JSON
    string is preceded by `[` or `, ` and followed by `]` or `,` (inside a JSON string a quote is escaped)."""
    item, column = json.dumps(name), runs.c.mcp_servers
    return or_(
        column == f"[{item}]",
        column.startswith(f"[{item},", autoescape=True),
        column.endswith(f", {item}]", autoescape=True),
        column.contains(f", {item},", autoescape=True),
    )


def _record(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        status=row["status"],
        output=row["output"],
        model=row["model"],
        mcp_servers=json.loads(row["mcp_servers"]),
        rounds=row["rounds"],
        steps=[],
        usage=Usage.from_json(json.loads(row["usage"]) if row["usage"] else None),
        duration_ms=row["duration_ms"] or 0.0,
        trace_id=row["trace_id"],
        warnings=json.loads(row["warnings"]) if row["warnings"] else [],
        tool_calls=json.loads(row["tool_calls"]) if row["tool_calls"] else [],
        reasoning=[],
        task=row["task"],
        model_requested=row["model_requested"],
        options=json.loads(row["options"]),
        key_name=row["key_name"],
        incomplete=bool(row["incomplete"]),
        error=json.loads(row["error"]) if row["error"] else None,
        created_at=_time(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
    )
