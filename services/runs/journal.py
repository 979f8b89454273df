"""A run's journal: what `RunStore` records of one run, and its events in memory for live followers.

The run calls `status`, `event` and `finished` (the agent's `Journal`); each queues writes on the store
and returns at once. Event data and results stay objects until the writer (or a live follower) turns
them into JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.agent import RunEvent, RunResult, RunState, RunStatus
from services.lmstudio import Usage
from services.runs.records import StoredEvent
from services.text import storable

INSERT, EVENT, UPDATE = "insert", "event", "update"  # the kinds of queued write


@dataclass(slots=True)
class JournalEvent:
    """An event as the run emitted it; written as JSON text by the writer (off the run's path), or when a
    follower reads it first."""

    seq: int
    event: str
    data: dict[str, Any] | RunResult | str
    text: str | None = None
    at: float = 0.0


RESULT = "result"  # a final update's values: the RunResult whose columns the writer fills in


def usage_json(usage: Usage) -> str:
    fields = ("prompt_tokens", "completion_tokens", "total_tokens")
    return json.dumps({name: getattr(usage, name) for name in fields})


def options_of(run: RunState) -> dict[str, Any]:
    """The request's options worth keeping: limits and choices, never a key (none reach the spec)."""
    spec = run.spec
    options: dict[str, Any] = {"max_rounds": run.limits.max_rounds}
    options |= {
        name: value
        for name in ("max_tokens", "temperature", "timeout_s", "tool_choice", "allowed_tools")
        if (value := getattr(spec, name)) is not None
    }
    if spec.system_prompt is not None:
        options["system_prompt"] = spec.system_prompt
    if spec.messages:
        options["messages"] = spec.messages
    if spec.client_tools:
        options["client_tools"] = [t.get("function", {}).get("name") for t in spec.client_tools]
    if spec.extra_body:
        options["lmstudio"] = spec.extra_body
    if spec.aids is not None:  # an eval's choice of aids
        options["aids"] = spec.aids.names
    return options | run.described_options()


class JournalStore(Protocol):
    """What a journal needs of its store (`RunStore`): where its writes go, how values become stored text, and
    the runs followed live."""

    live: dict[str, RunJournal]

    @property
    def instance(self) -> str: ...

    def put(self, kind: str, run_id: str, values: dict[str, Any]) -> None: ...

    def json(self, value: Any) -> str: ...

    def text(self, value: str) -> str: ...

    def encoded(self, item: JournalEvent) -> str: ...


@dataclass(slots=True)
class Follower:
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RunJournal:
    """One run's writes (the agent's `Journal`), and its events in memory for live followers."""

    def __init__(self, store: JournalStore, run: RunState, key_name: str | None) -> None:
        self.store = store
        self.run = run
        self.run_id = run.run_id
        self.key_name = key_name
        self.events: list[JournalEvent] = []
        self.settled = 0  # how many of `events` the writer has committed (or dropped): what followers may read
        self.fenced = False  # another process recorded the run `interrupted`: followers read on from the store
        self.done = False
        self.inserted = False
        self.durable = False  # its row is committed (the writer says so)
        self.row: dict[str, Any] = {}  # the row as it should be stored now: kept for a record served from memory
        self.started_at: float | None = None
        self.last_status: str | None = None
        self._followers: list[Follower] = []

    def status(self, status: RunStatus) -> None:
        if status == self.last_status:
            return
        now = time.time()
        started = {"started_at": now} if status == "running" and self.last_status in (None, "queued") else {}
        if started:
            self.started_at = now
        self.last_status = status
        if self.inserted:
            self._update({"status": status, **started})
            return
        self.inserted = True
        run, store = self.run, self.store
        store.live[self.run_id] = self
        self.row = {
            "run_id": self.run_id,
            "status": status,
            "model_requested": storable(run.spec.model) if run.spec.model is not None else None,
            "model": storable(run.model.id),
            "mcp_servers": json.dumps(run.servers),
            "task": store.text(run.spec.task),
            "options": store.json(options_of(run)),
            "output": "",
            "rounds": 0,
            "usage": None,
            "warnings": None,
            "tool_calls": None,
            "error": None,
            "duration_ms": None,
            "trace_id": None,
            "key_name": self.key_name,
            "instance": store.instance,
            "incomplete": False,
            "created_at": now,
            "started_at": now if status == "running" else None,
            "finished_at": None,
        }
        self.store.put(INSERT, self.run_id, dict(self.row))

    def _update(self, values: dict[str, Any]) -> None:
        self.row.update(values)
        self.store.put(UPDATE, self.run_id, values)

    def event(self, seq: int, event: str, data: dict[str, Any]) -> None:
        self._add(JournalEvent(seq, event, data))

    def text(self, seq: int, data: dict[str, Any]) -> str | None:
        item = self.events[-1] if self.events else None
        return self.store.encoded(item) if item is not None and item.seq == seq and item.data is data else None

    def finished(self, seq: int, status: RunStatus, result: RunResult | None, problem: dict[str, Any] | None) -> None:
        store = self.store
        if not self.inserted:  # ended before it ran (a queued run cancelled or stopped)
            self.status(status)
        now = time.time()
        values: dict[str, Any] = {"status": status, "finished_at": now}
        if result is not None:
            self._add(JournalEvent(seq, RunEvent.COMPLETED, result))
            values[RESULT] = result
        else:
            data = store.json(problem or {})
            self._add(JournalEvent(seq, RunEvent.FAILED, data))
            values |= {
                "error": data,
                "rounds": self.run.rounds,
                "warnings": store.json(self.run.warnings),
                "usage": usage_json(self.run.usage),
                "duration_ms": round((now - self.started_at) * 1000, 2) if self.started_at else None,
            }
        self.done = True
        self._update(values)
        self._wake_all()

    def _add(self, item: JournalEvent) -> None:
        self.events.append(item)
        item.at = time.time()
        values = {"run_id": self.run_id, "seq": item.seq, "event": item.event, "data": item, "at": item.at}
        self.store.put(EVENT, self.run_id, values)
        self._wake_all()

    def _wake_all(self) -> None:
        for follower in self._followers:
            follower.wake.set()

    def settle(self, count: int) -> None:
        """The writer has committed (or dropped) the next `count` events: live followers may read them."""
        self.settled = min(len(self.events), self.settled + count)
        self._wake_all()

    def fence(self) -> None:
        """Another process recorded the run `interrupted`: stop following here (the store has the rest)."""
        self.fenced = True
        self._wake_all()

    async def follow(self, after: int) -> AsyncIterator[StoredEvent]:
        """The run's events after `after` as they are committed, so that every event a follower reads is in the
        store (a process that dies takes nothing it showed with it); ends after the terminal event, or when the
        run is fenced (`fenced`: the caller reads on from the store)."""
        follower = Follower()
        self._followers.append(follower)
        try:
            index = next((i for i, item in enumerate(self.events) if item.seq > after), len(self.events))
            while not self.fenced:
                while index < self.settled:
                    item = self.events[index]
                    yield StoredEvent(item.seq, item.event, self.store.encoded(item))
                    index += 1
                if self.done and index >= len(self.events):
                    return
                await follower.wake.wait()
                follower.wake.clear()
        finally:
            self._followers.remove(follower)
