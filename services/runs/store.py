"""The run store: every run's record and events in SQLite (default) or PostgreSQL, written off the hot path.

A run hands its writes to its `RunJournal`, which queues them and returns at once; one writer task
(`writer.py`) commits them in batches. Readers call `flush()` first, so they see everything written before
they asked. A run whose writes the database does not take is held: served from memory (`held.py`), written
back whole (`incomplete: true`) once the store takes writes again. Runs live in this process are followed
from memory, others from the database. Several gateway processes may share the store: each holds a lease
(`lease.py`), and a run executed by one is cancelled or decided on through another by a request in the store
(`relay.py`); maintenance (claims, pruning) is done by one process at a time (`maintenance.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.agent import FINISHED_STATUSES, RunResult, RunState
from services.agent.approvals import Decision
from services.agent.records import TERMINAL_EVENTS, result_json
from services.errors import StoreUnavailableError
from services.metrics import Metrics
from services.runs.engines import async_engine
from services.runs.held import held_events, held_record
from services.runs.instance import hold_instance, release_instance
from services.runs.journal import JournalEvent, RunJournal
from services.runs.lease import DEFAULT_LEASE_S, Lease
from services.runs.maintenance import DEFAULT_ORPHAN_GRACE_S, Maintenance
from services.runs.migrate import migrate
from services.runs.records import (
    PREVIEW_CHARS,
    RECORD_EVENTS,
    RunPage,
    RunRecord,
    StoredEvent,
    add_to_record,
    listed_of,
    record_of,
)
from services.runs.relay import RelayWatch, request_cancel
from services.runs.tables import approvals, has_server, run_events, runs
from services.runs.writer import RunWriter, StoreHealth
from services.text import storable

log = logging.getLogger("lmstudio_bridge.store")

POLL_S = 0.5  # how often a follower of a run in another gateway process looks for new events


@dataclass(frozen=True, slots=True)
class RunFilter:
    """`GET /v1/runs` filters; None matches everything."""

    status: str | None = None
    model: str | None = None
    server: str | None = None
    since: datetime | None = None
    key_name: str | None = None


class RunStore:
    """Records runs; see the module docstring. Open with `RunStore.open(url, ...)`, close with `aclose`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        instance: str,
        metrics: Metrics,
        redact: Callable[[str], str],
        retention_days: float,
        lease_s: float,
        orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
    ) -> None:  # built by `open`, which has the defaults
        self.engine = engine
        self.instance = instance
        self.metrics = metrics
        self.redact = redact
        self.retention_days = retention_days
        self.live: dict[str, RunJournal] = {}  # runs of this process whose terminal event is not written yet
        self.writer = RunWriter(self)
        self.lease = Lease(self, lease_s)
        self.maintenance = Maintenance(self, self.lease, orphan_grace_s)
        self.relay = RelayWatch(self)
        # runs of ours another process asked to cancel or recorded `interrupted` (`fence`): the run service stops them
        self.cancel_requests: asyncio.Queue[str] = asyncio.Queue()
        self.decisions: asyncio.Queue[tuple[str, str, Decision]] = asyncio.Queue()  # (run, call, decision) relayed
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
        lease_s: float = DEFAULT_LEASE_S,
        orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
    ) -> RunStore:
        """Connect, migrate, take this instance's lease and mark the runs a previous process of it left
        unfinished `interrupted`, start writing, heartbeating and looking for cancel requests."""
        hold_instance(url, instance)  # SQLite: another live process with this id stops start-up here
        engine = async_engine(url)
        try:
            await migrate(engine)
            store = cls(
                engine,
                instance=instance,
                metrics=metrics,
                redact=redact,
                retention_days=retention_days,
                lease_s=lease_s,
                orphan_grace_s=orphan_grace_s,
            )
            interrupted = await store.lease.register()
        except BaseException:
            await engine.dispose()
            release_instance(url, instance)
            raise
        if interrupted:
            log.warning("%d run(s) left unfinished by an earlier start were marked interrupted", interrupted)
        store._tasks = [
            asyncio.create_task(task)
            for task in (store.writer.run(), store.maintenance.run(), store.lease.run(), store.relay.run())
        ]
        return store

    async def aclose(self) -> None:
        """Write what is queued, stop the background tasks, close the connections."""
        try:
            await self.flush(within_s=30.0)
        except TimeoutError:
            log.error("the run store could not write %d queued change(s) before closing", self.backlog)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.lease.release()
        except Exception as exc:
            log.warning("run store: could not remove this instance's lease (%s); it expires on its own", exc)
        await self.writer.close()
        await self.engine.dispose()
        release_instance(self.engine.url.render_as_string(hide_password=False), self.instance)

    def journal(self, run: RunState) -> RunJournal:
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

    def put(self, kind: str, run_id: str, values: dict[str, Any]) -> None:
        """Queue one write (the journal's); returns at once."""
        self.writer.put(kind, run_id, values)

    def durable(self, run_id: str) -> bool:
        """Whether the run's row is committed (checked after `flush`, before a background run is answered 202)."""
        journal = self.live.get(run_id)
        return journal is not None and journal.durable and run_id not in self.writer.held

    def forget(self, run_id: str) -> None:
        """Drop a run that was refused before it was answered: no record of it, here or in the database."""
        self.writer.forget(run_id)

    def health(self) -> StoreHealth:
        return self.writer.health()

    async def reopen(self) -> None:
        """The SQLite file was deleted or replaced: open the store at its path again (a new file gets the tables)
        and take this instance's lease there."""
        await self.engine.dispose()
        await migrate(self.engine)
        await self.lease.register()

    async def _held(self, run_id: str) -> RunJournal | None:
        """The run's journal if its record is in memory only (after the writes queued before are settled)."""
        await self.flush()
        return self.writer.held.get(run_id)

    @contextlib.asynccontextmanager
    async def _reading(self, flush: bool = True) -> AsyncIterator[None]:
        """A read of the database: its failure is 503 `store_unavailable`, not a 500."""
        if flush:
            await self.flush()
        try:
            yield
        except (SQLAlchemyError, OSError) as exc:
            self.metrics.store_errors.inc()
            raise StoreUnavailableError(f"The run store cannot be read: {exc}", retry_after=5) from None

    @property
    def writer_engine(self) -> Engine:
        """The (sync) engine the writes go through: the SQLite writer's, or the async engine's core."""
        return self.writer.engine

    @property
    def backlog(self) -> int:
        return len(self.writer.pending)

    async def flush(self, within_s: float | None = None) -> None:
        """Wait until everything queued so far is written (or dropped); TimeoutError after `within_s`."""
        async with asyncio.timeout(within_s):
            await self.writer.flush()

    async def get(self, run_id: str) -> RunRecord | None:
        if (journal := await self._held(run_id)) is not None:
            return held_record(self, journal)
        async with self._reading(), self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.run_id == run_id))).mappings().first()
            if row is None:
                return None
            rows = await conn.execute(
                select(run_events.c.event, run_events.c.data)
                .where(run_events.c.run_id == run_id, run_events.c.event.in_(RECORD_EVENTS))
                .order_by(run_events.c.seq)
            )
            record = record_of(row)
            for name, data in rows:
                add_to_record(record, name, json.loads(data))
        return record

    async def page(self, filters: RunFilter, limit: int, cursor: str | None) -> RunPage:
        """Runs newest first; `cursor` is the `next_cursor` of the page before."""
        task = func.substr(runs.c.task, 1, PREVIEW_CHARS + 1).label("task")  # the whole task may be huge
        columns = [column for column in runs.c if column.name != "task"]
        query: Select[Any] = select(*columns, task).order_by(runs.c.num.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(runs.c.num < int(cursor))
        if filters.status is not None:
            query = query.where(runs.c.status == filters.status)
        if filters.model is not None:
            query = query.where(runs.c.model == filters.model)
        if filters.server is not None:
            query = query.where(has_server(filters.server))
        if filters.since is not None:
            # times are shown to the microsecond: half a microsecond of slack keeps a run's own created_at in
            query = query.where(runs.c.created_at >= filters.since.timestamp() - 0.5e-6)
        if filters.key_name is not None:
            query = query.where(runs.c.key_name == filters.key_name)
        async with self._reading(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        shown = rows[:limit]
        return RunPage([listed_of(row) for row in shown], str(shown[-1]["num"]) if len(rows) > limit else None)

    async def events(self, run_id: str, after: int = 0, *, flush: bool = True) -> list[StoredEvent]:
        if flush and (journal := await self._held(run_id)) is not None:  # (no flush: a follower of a run not here)
            return held_events(self, journal, after)
        async with self._reading(flush), self.engine.connect() as conn:
            rows = await conn.execute(
                select(run_events.c.seq, run_events.c.event, run_events.c.data)
                .where(run_events.c.run_id == run_id, run_events.c.seq > after)
                .order_by(run_events.c.seq)
            )
            return [StoredEvent(seq, name, data) for seq, name, data in rows]

    async def last_event(self, run_id: str) -> StoredEvent | None:
        if (journal := await self._held(run_id)) is not None:
            return next(iter(held_events(self, journal, 0)[-1:]), None)
        async with self._reading(), self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(run_events.c.seq, run_events.c.event, run_events.c.data)
                    .where(run_events.c.run_id == run_id)
                    .order_by(run_events.c.seq.desc())
                    .limit(1)
                )
            ).first()
        return StoredEvent(*row) if row else None

    async def status_of(self, run_id: str, *, flush: bool = True) -> str | None:
        found = await self.status_and_key(run_id, flush=flush)
        return found[0] if found else None

    async def status_and_key(self, run_id: str, *, flush: bool = True) -> tuple[str, str | None] | None:
        """The run's status and its API key's name; None when there is no such run."""
        if flush and (journal := await self._held(run_id)) is not None:
            return journal.row["status"], journal.key_name
        async with self._reading(flush), self.engine.connect() as conn:
            row = (await conn.execute(select(runs.c.status, runs.c.key_name).where(runs.c.run_id == run_id))).first()
        return (row[0], row[1]) if row else None

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[StoredEvent]:
        """The run's events after `after`, then new ones as they come, until the terminal event."""
        journal = self.live.get(run_id) or self.writer.held.get(run_id)
        if journal is not None:
            async for item in journal.follow(after):
                yield item
                after = item.seq
            if not journal.fenced:
                return
        while True:  # not in this process: what the database has, polled while another process runs it
            status = await self.status_of(run_id, flush=False)  # first: a run seen ended has its end event stored
            for item in await self.events(run_id, after, flush=False):
                yield item
                after = item.seq
                if item.event in TERMINAL_EVENTS:
                    return
            if status is None or status in FINISHED_STATUSES:
                return
            await asyncio.sleep(POLL_S)

    async def delete(self, run_id: str) -> bool:
        held = self.writer.held.pop(run_id, None) is not None  # a record in memory only goes with it
        async with self._reading(), self.engine.begin() as conn:
            await conn.execute(delete(run_events).where(run_events.c.run_id == run_id))
            await conn.execute(delete(approvals).where(approvals.c.run_id == run_id))
            deleted = await conn.execute(delete(runs).where(runs.c.run_id == run_id))
        return held or bool(deleted.rowcount)

    async def request_cancel(self, run_id: str) -> bool:
        """Ask the process that executes the run to cancel it; False when it has already ended."""
        await self.flush()
        return await request_cancel(self.engine, run_id)

    def fence(self, run_id: str) -> None:
        """Another process recorded this run of ours `interrupted`: drop its further writes and stop it."""
        if (journal := self.live.get(run_id)) is not None:
            self.writer.fenced.add(run_id)
            journal.fence()
            self.cancel_requests.put_nowait(run_id)

    async def prune(self, now: float | None = None) -> int | None:
        """Delete runs finished more than the retention ago; how many (None: another process is pruning)."""
        await self.flush()
        return await self.maintenance.prune(now)
