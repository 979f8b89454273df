"""What the writer commits: a batch of queued writes (`plan_of`); and runs whose record lives in memory while
the store does not take their writes: record and events served from the run's journal, and the statements
that write such a run back whole once the store takes writes again (`write_back`).

A run lands here when one of its writes is lost (the database failed, was full, or its file was deleted or
replaced). Its journal keeps the row as it should be stored (`RunJournal.row`) and every event, so nothing
the run did is lost while the process lives; the written-back record says `incomplete: true`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Executable, Table, insert, update

from services.agent import RunResult
from services.runs.journal import EVENT, INSERT, RESULT, RunJournal, usage_json
from services.runs.records import RECORD_EVENTS, RunRecord, StoredEvent, add_to_record, record_of
from services.runs.tables import run_events, runs
from services.text import storable


@dataclass(slots=True)
class Write:
    kind: str
    run_id: str
    values: dict[str, Any]
    n: int = 0  # its place in the order writes were queued


class HeldStore(Protocol):
    """How values become stored text (`RunStore`)."""

    def json(self, value: Any) -> str: ...

    def text(self, value: str) -> str: ...

    def encoded(self, item: Any) -> str: ...


def result_columns(store: HeldStore, result: RunResult) -> dict[str, Any]:
    """The `runs` columns a finished run's result fills in."""
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


def plan_of(store: HeldStore, batch: list[Write], incomplete: set[str]) -> list[tuple[Executable, Any]]:
    """The statements of one batch: the runs inserted in it (with their later values), their events,
    then the updates of runs inserted before."""
    inserts: dict[str, dict[str, Any]] = {}
    updates: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for write in batch:
        if write.kind == INSERT:
            inserts[write.run_id] = dict(write.values)
        elif write.kind == EVENT:
            events.append({**write.values, "data": store.encoded(write.values["data"])})
        else:
            values = dict(write.values)
            result = values.pop(RESULT, None)
            if result is not None:
                values |= result_columns(store, result)
            (inserts.get(write.run_id) or updates.setdefault(write.run_id, {})).update(values)
    for run_id in incomplete.intersection(inserts.keys() | updates.keys()):
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


def stored_row(store: HeldStore, journal: RunJournal) -> dict[str, Any]:
    """The run's row as it should be stored now, marked incomplete."""
    row = dict(journal.row)
    result = row.pop(RESULT, None)
    if result is not None:
        row |= result_columns(store, result)
    row["incomplete"] = True
    return row


def held_record(store: HeldStore, journal: RunJournal) -> RunRecord:
    """The run's record from memory (`GET /v1/runs/{id}` while its writes are not in the store)."""
    record = record_of(stored_row(store, journal))
    for item in journal.events:
        if item.event in RECORD_EVENTS:
            add_to_record(record, item.event, json.loads(store.encoded(item)))
    return record


def held_events(store: HeldStore, journal: RunJournal, after: int) -> list[StoredEvent]:
    return [StoredEvent(item.seq, item.event, store.encoded(item)) for item in journal.events if item.seq > after]


def _insert(dialect: str, table: Table) -> Any:
    # the dialect's own INSERT (ON CONFLICT), imported here as lease.py does
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def write_back(store: HeldStore, dialect: str, journal: RunJournal, chunk: int = 1000) -> list[tuple[Executable, Any]]:
    """The statements that write the run back whole: its row inserted or overwritten, then its events not
    stored yet, `chunk` a statement (SQLite takes 32,766 parameters a statement)."""
    row = stored_row(store, journal)
    statement = _insert(dialect, runs).values(row)
    changed = {name: value for name, value in row.items() if name != "run_id"}
    plan: list[tuple[Executable, Any]] = [
        (statement.on_conflict_do_update(index_elements=["run_id"], set_=changed), None)
    ]
    events = [
        {"run_id": journal.run_id, "seq": e.seq, "event": e.event, "data": store.encoded(e), "at": e.at}
        for e in journal.events
    ]
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        plan.append((_insert(dialect, run_events).values(part).on_conflict_do_nothing(), None))
    return plan
