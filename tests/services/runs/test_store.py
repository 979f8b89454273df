"""The run store on SQLite and PostgreSQL alike: writing a run's life, reading it back, paging, following,
restarts, retention, failures, secrets and odd text. Runs are fakes with just what `RunJournal` reads."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import event, select, text

import services.runs.migrate as migrate_module
from services.access import Access
from services.agent import RoundReasoning, Run, RunResult, RunSpec, Step
from services.agent.defaults import RunLimits
from services.agent.records import RunEvent, RunStatus, step_data
from services.errors import BridgeError
from services.lmstudio import Usage
from services.metrics import Metrics
from services.runs import RunFilter, RunStore
from services.runs.tables import run_events, runs
from services.text import Redactor
from tests.helpers import REPO, eventually

pytestmark = pytest.mark.timeout(60)

SECRETS = ["sk-secret-123", "tok-abcdef"]
INSTANCE = "gw-test"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
S1 = 'p%q_r"s'  # LIKE wildcards and a JSON-escaped quote
S2 = 'pXXq-r"s'  # what S1 would match as an unescaped LIKE pattern


# --- fakes and helpers -----------------------------------------------------------------------------


@dataclass
class FakeModel:
    id: str


@dataclass
class FakeRun:
    """The attributes of `services.agent.Run` that `RunJournal` reads."""

    spec: RunSpec
    model: FakeModel
    servers: list[str]
    run_id: str = field(default_factory=lambda: f"run_{uuid.uuid4().hex[:24]}")
    rounds: int = 0
    warnings: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    @property
    def limits(self) -> RunLimits:
        return RunLimits(self.spec.max_rounds or 10, self.spec.max_tokens or 1000, self.spec.timeout_s or 60)

    def described_options(self) -> dict[str, Any]:
        return {}


class Driver:
    """A fake run and its journal, numbering events as `Run` does."""

    def __init__(
        self,
        store: RunStore,
        task: str = "What time is it?",
        servers: list[str] | None = None,
        model: str = "m-1",
        key_name: str | None = None,
        **spec: Any,
    ) -> None:
        self.servers = ["time"] if servers is None else servers
        access = Access(name=key_name) if key_name else None
        self.run = FakeRun(
            RunSpec(task=task, mcp_servers=self.servers, access=access, **spec), FakeModel(model), self.servers
        )
        self.run_id = self.run.run_id
        self.journal = store.journal(cast(Run, self.run))
        self.seq = 0

    def status(self, status: RunStatus) -> None:
        self.journal.status(status)

    def event(self, name: str, data: dict[str, Any]) -> int:
        self.seq += 1
        self.journal.event(self.seq, name, data)
        return self.seq

    def complete(self, result: RunResult) -> int:
        self.seq += 1
        self.journal.finished(self.seq, result.status, result, None)
        return self.seq

    def fail(self, status: RunStatus = "failed", detail: str = "it broke") -> int:
        self.seq += 1
        self.journal.finished(self.seq, status, None, BridgeError(detail).problem())
        return self.seq


def make_step(output: str = "12:00 UTC", arguments: Any = None) -> Step:
    return Step(
        round=1,
        tool_call_id="call_1",
        name="time__get_current_time",
        server="time",
        tool="get_current_time",
        arguments={"timezone": "UTC"} if arguments is None else arguments,
        output=output,
        is_error=False,
        duration_ms=3.5,
    )


def make_result(
    driver: Driver,
    output: str = "It is noon.",
    steps: list[Step] | None = None,
    reasoning: list[RoundReasoning] | None = None,
    model: str | None = None,
    warnings: list[str] | None = None,
) -> RunResult:
    return RunResult(
        run_id=driver.run_id,
        status="completed",
        output=output,
        model=model or driver.run.model.id,
        mcp_servers=driver.servers,
        rounds=1,
        steps=steps or [],
        usage=Usage(10, 5, 15),
        duration_ms=12.5,
        trace_id=TRACE_ID,
        warnings=["answered by another model"] if warnings is None else warnings,
        reasoning=reasoning or [],
    )


def counter(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def rows_of(store: RunStore) -> list[dict[str, Any]]:
    """Every row of both tables, every column."""
    async with store.engine.connect() as conn:
        found = [dict(r) for r in (await conn.execute(select(runs))).mappings()]
        found += [dict(r) for r in (await conn.execute(select(run_events))).mappings()]
    return found


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def store(url: str, metrics: Metrics) -> AsyncIterator[RunStore]:
    opened = await RunStore.open(url, instance=INSTANCE, metrics=metrics, redact=Redactor(SECRETS))
    yield opened
    await opened.aclose()


async def test_the_writer_ends_when_cancelled_just_as_it_is_woken(store: RunStore) -> None:
    """A cancel that arrives with a write ends the writer (3.11's asyncio.wait_for swallowed such a cancel, and
    the store's close then waited for ever: the gateway's stop hung)."""
    writer, task = store.writer, store._tasks[0]

    def idle() -> bool:  # waiting for writes (not checking the file): the chain of awaits the task is in
        names, awaited = [], cast(Any, task.get_coro())
        while awaited is not None and hasattr(awaited, "cr_code"):
            names.append(awaited.cr_code.co_name)
            awaited = awaited.cr_await
        return "_next" in names and "_guarded" not in names

    await eventually(idle, 10, "the writer waiting for writes")
    writer._wake.set()
    task.cancel()
    await asyncio.wait([task], timeout=30)  # (a bound for the failing case only)
    assert task.cancelled()


# --- 1, 2: a run's life ----------------------------------------------------------------------------


async def test_a_runs_life_is_recorded_in_full(store: RunStore) -> None:
    run = Driver(store, servers=["time", "fs"], model="req-model", key_name="alice", max_rounds=5, temperature=0.2)
    run.run.spec.system_prompt = "be brief"
    run.run.spec.model = "req-model"
    run.status("queued")
    queued = await store.get(run.run_id)
    assert queued is not None and queued.status == "queued" and queued.started_at is None
    assert queued.created_at is not None and queued.finished_at is None

    run.status("running")
    step, thought = make_step(), RoundReasoning(1, "the user wants the time")
    run.event(RunEvent.STARTED, {"run_id": run.run_id})
    run.event(RunEvent.ROUND_STARTED, {"round": 1})
    run.event(RunEvent.REASONING, {"round": 1, "content": thought.content})
    run.event(RunEvent.TOOL_CALL_STARTED, {"round": 1, "name": step.name})
    run.event(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
    n = run.event(RunEvent.MESSAGE, {"content": "It is noon."})
    running = await store.get(run.run_id)
    assert running is not None and running.status == "running" and running.started_at is not None
    assert running.steps == [step] and running.reasoning == [thought] and running.finished_at is None
    assert await store.status_of(run.run_id) == "running"

    result = make_result(run, steps=[step], reasoning=[thought], model="m-answered")
    assert run.complete(result) == n + 1
    record = await store.get(run.run_id)
    assert record is not None
    assert (record.run_id, record.status, record.output) == (run.run_id, "completed", "It is noon.")
    assert (record.model, record.model_requested) == ("m-answered", "req-model")
    assert record.mcp_servers == ["time", "fs"]
    assert record.task == "What time is it?"
    assert record.options == {"max_rounds": 5, "temperature": 0.2, "system_prompt": "be brief"}
    assert record.usage == Usage(10, 5, 15)
    assert (record.rounds, record.duration_ms, record.trace_id) == (1, 12.5, TRACE_ID)
    assert record.warnings == ["answered by another model"]
    assert record.steps == [step] and record.reasoning == [thought]
    assert (record.key_name, record.incomplete, record.error, record.tool_calls) == ("alice", False, None, [])
    assert record.created_at is not None and record.started_at is not None and record.finished_at is not None
    assert record.created_at <= record.started_at <= record.finished_at
    assert record.created_at.tzinfo is not None

    events = await store.events(run.run_id)
    assert [e.seq for e in events] == list(range(1, n + 2))
    assert events[-1].event == RunEvent.COMPLETED and json.loads(events[-1].data)["output"] == "It is noon."
    assert events[4].event == RunEvent.TOOL_CALL_COMPLETED and json.loads(events[4].data) == step_data(step)
    rest = await store.events(run.run_id, after=3)
    assert rest == events[3:]
    assert await store.events(run.run_id, after=n + 1) == []
    assert await store.last_event(run.run_id) == events[-1]
    assert await store.status_of(run.run_id) == "completed"


async def test_a_run_started_and_finished_within_one_batch_is_one_insert(store: RunStore) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(store.writer_engine, "before_cursor_execute", seen)
    try:
        run = Driver(store)
        run.status("queued")
        run.status("running")  # nothing awaited: the writer has not run yet
        step = make_step()
        run.event(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
        run.complete(make_result(run, steps=[step]))
        await store.flush()
    finally:
        event.remove(store.writer_engine, "before_cursor_execute", seen)
    assert len([s for s in statements if s.startswith("INSERT INTO RUNS ")]) == 1, statements
    assert not [s for s in statements if s.startswith("UPDATE RUNS ")], statements
    record = await store.get(run.run_id)
    assert record is not None and record.status == "completed" and record.output == "It is noon."
    assert record.started_at is not None and record.finished_at is not None and record.steps == [step]
    assert record.usage.total_tokens == 15 and record.trace_id == TRACE_ID
    assert [e.event for e in await store.events(run.run_id)] == [RunEvent.TOOL_CALL_COMPLETED, RunEvent.COMPLETED]


async def test_a_run_cancelled_while_queued_is_recorded(store: RunStore) -> None:
    run = Driver(store)
    run.fail("cancelled", "cancelled before it ran")  # no status() before: it never got a slot
    record = await store.get(run.run_id)
    assert record is not None and record.status == "cancelled" and record.finished_at is not None
    assert record.error is not None and record.error["detail"] == "cancelled before it ran"
    assert [(e.seq, e.event) for e in await store.events(run.run_id)] == [(1, RunEvent.FAILED)]


# --- 3: paging --------------------------------------------------------------------------------------


@dataclass
class Seeded:
    ids: list[str]  # oldest first
    status: dict[str, str]
    model: dict[str, str]
    servers: dict[str, list[str]]
    since: datetime  # created_at of the second half is at or after it, of the first half before it


SERVER_SETS: list[list[str]] = [["time", S1], [S2], ["s"], [], ["time2"]]


async def seed(store: RunStore, count: int = 250) -> Seeded:
    seeded = Seeded([], {}, {}, {}, datetime.now(UTC))
    for i in range(count):
        if i == count // 2:
            await store.flush()
            seeded.since = datetime.fromtimestamp(time.time(), UTC)
        run = Driver(store, servers=SERVER_SETS[i % len(SERVER_SETS)], model=f"m-{i % 2}")
        run.status("running")
        if i % 3 == 1:
            run.complete(make_result(run))
        elif i % 3 == 2:
            run.fail()
        seeded.ids.append(run.run_id)
        seeded.status[run.run_id] = ["running", "completed", "failed"][i % 3]
        seeded.model[run.run_id] = run.run.model.id
        seeded.servers[run.run_id] = run.servers
    await store.flush()
    return seeded


async def all_pages(store: RunStore, filters: RunFilter, limit: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.page(filters, limit, cursor)
        assert len(page.data) <= limit
        ids += [r.run_id for r in page.data]
        if page.next_cursor is None:
            return ids
        assert len(page.data) == limit
        cursor = page.next_cursor


async def test_page_is_newest_first_and_cursor_paging_gives_every_run_once(store: RunStore) -> None:
    seeded = await seed(store)
    newest_first = seeded.ids[::-1]
    first = await store.page(RunFilter(), 7, None)
    assert [r.run_id for r in first.data] == newest_first[:7] and first.next_cursor is not None
    assert first.data[0].steps == [] and first.data[0].model == seeded.model[newest_first[0]]
    assert await all_pages(store, RunFilter(), 7) == newest_first
    assert (await store.page(RunFilter(), 250, None)).next_cursor is None  # exactly a full last page
    assert (await store.page(RunFilter(), 249, None)).next_cursor is not None

    for status in ("running", "completed", "failed"):
        expected = [i for i in newest_first if seeded.status[i] == status]
        assert await all_pages(store, RunFilter(status=status), 7) == expected
    expected = [i for i in newest_first if seeded.model[i] == "m-1"]
    assert await all_pages(store, RunFilter(model="m-1"), 7) == expected
    assert await all_pages(store, RunFilter(model="m-"), 7) == []
    expected = newest_first[: len(newest_first) - 125]
    assert await all_pages(store, RunFilter(since=seeded.since), 7) == expected
    both = RunFilter(status="completed", model="m-0", since=seeded.since)
    expected = [i for i in expected if seeded.status[i] == "completed" and seeded.model[i] == "m-0"]
    assert expected and await all_pages(store, both, 7) == expected
    assert await store.page(RunFilter(status="interrupted"), 7, None) == type(first)([], None)


@pytest.mark.parametrize("server", [S1, S2, "time", "s", "p", "time2"])
async def test_page_server_filter_matches_the_name_exactly(store: RunStore, server: str) -> None:
    seeded = await seed(store, 50)
    expected = [i for i in seeded.ids[::-1] if server in seeded.servers[i]]
    assert await all_pages(store, RunFilter(server=server), 7) == expected


# --- 4: following -----------------------------------------------------------------------------------


async def test_follow_a_live_run_replays_then_streams_until_the_terminal_event(store: RunStore) -> None:
    run = Driver(store)
    run.status("running")
    run.event(RunEvent.STARTED, {})
    run.event(RunEvent.ROUND_STARTED, {"round": 1})
    assert run.run_id in store.live
    follower = store.follow(run.run_id)
    assert [(await anext(follower)).seq, (await anext(follower)).seq] == [1, 2]
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)  # a yield, not a wait: the follower runs until it blocks on the next event
    assert not waiting.done()
    run.event(RunEvent.MESSAGE, {"content": "hi"})
    assert (await waiting).seq == 3
    run.complete(make_result(run))
    last = await anext(follower)
    assert (last.seq, last.event) == (4, RunEvent.COMPLETED)
    with pytest.raises(StopAsyncIteration):
        await anext(follower)

    late = [(e.seq, e.event) async for e in store.follow(run.run_id, after=2)]
    assert late == [(3, RunEvent.MESSAGE), (4, RunEvent.COMPLETED)]


async def test_follow_a_finished_run_replays_from_the_database(store: RunStore) -> None:
    run = Driver(store)
    run.status("running")
    run.event(RunEvent.STARTED, {})
    run.fail()
    await store.flush()
    assert run.run_id not in store.live
    followed = [(e.seq, e.event) async for e in store.follow(run.run_id)]
    assert followed == [(1, RunEvent.STARTED), (2, RunEvent.FAILED)]
    assert [e.seq async for e in store.follow(run.run_id, after=1)] == [2]
    assert [e async for e in store.follow("run_unknown")] == []


# --- 5: restart -------------------------------------------------------------------------------------


async def test_reopening_interrupts_the_unfinished_runs_of_the_same_instance(url: str, metrics: Metrics) -> None:
    first = await RunStore.open(url, instance="gw-1", metrics=metrics)
    other = await RunStore.open(url, instance="gw-2", metrics=metrics)
    try:
        step = make_step()
        running = Driver(first)
        running.status("running")
        running.event(RunEvent.STARTED, {})
        running.event(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
        queued = Driver(first)
        queued.status("queued")
        done = Driver(first)
        done.status("running")
        done.complete(make_result(done))
        elsewhere = Driver(other)
        elsewhere.status("running")
        elsewhere.event(RunEvent.STARTED, {})
    finally:
        await first.aclose()  # the gateway stops without finishing its runs
        await other.aclose()

    again = await RunStore.open(url, instance="gw-1", metrics=metrics)
    try:
        record = await again.get(running.run_id)
        assert record is not None and record.status == "interrupted" and record.steps == [step]
        assert record.finished_at is not None and record.error is not None
        assert record.error["code"] == "interrupted"
        events = await again.events(running.run_id)
        assert [(e.seq, e.event) for e in events] == [
            (1, RunEvent.STARTED),
            (2, RunEvent.TOOL_CALL_COMPLETED),
            (3, RunEvent.FAILED),
        ]
        assert json.loads(events[-1].data)["code"] == "interrupted"
        assert await again.status_of(queued.run_id) == "interrupted"
        assert [(e.seq, e.event) for e in await again.events(queued.run_id)] == [(1, RunEvent.FAILED)]
        assert await again.status_of(done.run_id) == "completed"
        assert await again.last_event(done.run_id) is not None
        assert await again.status_of(elsewhere.run_id) == "running"
        assert [e.seq for e in await again.events(elsewhere.run_id)] == [1]
    finally:
        await again.aclose()


# --- 6: retention -----------------------------------------------------------------------------------


async def test_prune_deletes_runs_finished_before_the_cutoff_and_their_events(store: RunStore) -> None:
    old = Driver(store)
    old.status("running")
    old.event(RunEvent.STARTED, {})
    old.complete(make_result(old))
    await store.flush()
    cutoff = time.time()  # `old` finished before it, `new` at or after it (prune deletes finished_at < cutoff)
    new = Driver(store)
    new.status("running")
    new.complete(make_result(new))
    unfinished = Driver(store)
    unfinished.status("running")
    unfinished.event(RunEvent.STARTED, {})
    await store.flush()

    assert await store.prune(now=cutoff + store.retention_days * 86_400) == 1
    assert await store.get(old.run_id) is None and await store.events(old.run_id) == []
    assert await store.status_of(new.run_id) == "completed" and len(await store.events(new.run_id)) == 1
    assert await store.status_of(unfinished.run_id) == "running"
    assert await store.prune(now=time.time() + 10 * 365 * 86_400) == 1  # everything finished; not `unfinished`
    assert await store.status_of(unfinished.run_id) == "running"


# --- 7: failures ------------------------------------------------------------------------------------


async def test_nul_characters_are_stored_as_replacement_characters(store: RunStore, metrics: Metrics) -> None:
    run = Driver(store, task="t\x00ask")
    run.status("running")
    run.event(RunEvent.MESSAGE, {"content": "x\x00y"})
    run.complete(make_result(run, output="a\x00b", steps=[make_step(output="n\x00ul")]))
    record = await store.get(run.run_id)
    assert record is not None and record.status == "completed"
    assert (record.task, record.output) == ("t\ufffdask", "a\ufffdb")
    events = await store.events(run.run_id)
    # inside event data a NUL is JSON's escape `\u0000` (text every store takes): it comes back as it went in
    assert json.loads(events[0].data)["content"] == "x\x00y"
    assert json.loads(events[1].data)["steps"][0]["output"] == "n\x00ul"
    assert counter(metrics, "bridge_store_errors_total") == 0 and not record.incomplete


async def test_a_failed_write_is_counted_and_marks_the_run_incomplete(store: RunStore, metrics: Metrics) -> None:
    """A row the database refuses (and only it): the run is held in memory (served whole from there), then
    written back piece by piece once the store is seen to take writes: everything but the refused row."""

    def fail_on_boom(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUN_EVENTS") and "BOOM" in repr(parameters):
            raise RuntimeError("injected write failure")

    event.listen(store.writer_engine, "before_cursor_execute", fail_on_boom)
    try:
        run = Driver(store)
        run.status("running")
        run.event(RunEvent.STARTED, {})
        run.event(RunEvent.MESSAGE, {"content": "BOOM"})  # fails in the batch, and again on its own
        run.event(RunEvent.MESSAGE, {"content": "fine"})
        await store.flush()
        assert counter(metrics, "bridge_store_errors_total") >= 1
        assert counter(metrics, "bridge_store_writes_dropped_total") == 1
        run.event(RunEvent.MESSAGE, {"content": "after"})
        run.complete(make_result(run))
        held = await store.get(run.run_id)  # from memory while held (whole), else as written back
        assert held is not None and held.status == "completed" and held.incomplete is True
        await eventually(lambda: not store.writer.held, 10, "the held run written back")
    finally:
        event.remove(store.writer_engine, "before_cursor_execute", fail_on_boom)
    record = await store.get(run.run_id)
    assert record is not None and record.status == "completed" and record.output == "It is noon."
    assert record.incomplete is True
    assert [e.seq for e in await store.events(run.run_id)] == [1, 3, 4, 5]  # all but the refused row
    assert store.health().ok
    other = Driver(store)
    other.status("running")
    fresh = await store.get(other.run_id)
    assert fresh is not None and not fresh.incomplete  # only the run that lost a write is marked


# --- 8, 9: secrets and odd text ---------------------------------------------------------------------


async def test_secrets_are_redacted_in_every_column_of_every_row(store: RunStore) -> None:
    leak = "keys sk-secret-123 and tok-abcdef"
    run = Driver(store, task=f"use {leak}", system_prompt=f"prompt {leak}")
    run.status("running")
    step = make_step(output=f"tool said {leak}", arguments={"token": "tok-abcdef"})
    run.event(RunEvent.TOOL_CALL_STARTED, {"arguments": {"token": "tok-abcdef"}})
    run.event(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
    run.event(RunEvent.REASONING, {"round": 1, "content": f"think {leak}"})
    run.complete(make_result(run, output=f"out {leak}", steps=[step], warnings=[f"warn {leak}"]))
    failed = Driver(store, task="x")
    failed.status("running")
    failed.fail(detail=f"crashed with {leak}")
    record = await store.get(run.run_id)
    assert record is not None and "[REDACTED]" in record.task and "[REDACTED]" in record.output
    assert record.steps[0].output == "tool said keys [REDACTED] and [REDACTED]"
    rows = await rows_of(store)
    assert len(rows) == 2 + 5
    for row in rows:
        for column, value in row.items():
            for secret in SECRETS:
                assert secret not in str(value), (column, value)


async def test_a_redacted_bearer_token_in_quotes_keeps_the_json_valid(store: RunStore) -> None:
    header = 'curl -H "Authorization: Bearer abc123xyz" https://example.test'
    run = Driver(store, task=header, system_prompt=header)
    run.status("running")
    run.event(RunEvent.MESSAGE, {"content": header})
    run.complete(make_result(run, output=header))
    for item in await store.events(run.run_id):
        json.loads(item.data)  # every event's data is still JSON
    record = await store.get(run.run_id)  # the options column is still JSON
    assert record is not None and "abc123xyz" not in record.options["system_prompt"]
    assert all("abc123xyz" not in str(value) for row in await rows_of(store) for value in row.values())


async def test_a_non_ascii_secret_is_redacted_in_json_columns_too(url: str, metrics: Metrics) -> None:
    secret = "clé-secrète-42"
    store = await RunStore.open(url, instance=INSTANCE, metrics=metrics, redact=Redactor([secret]))
    try:
        run = Driver(store, task=f"use {secret}", system_prompt=f"use {secret}")
        run.status("running")
        run.event(RunEvent.MESSAGE, {"content": f"use {secret}"})
        run.fail(detail=f"failed with {secret}")
        await store.flush()
        for row in await rows_of(store):
            for column, value in row.items():
                stored = json.loads(value) if column in ("options", "data", "error") else value
                assert secret not in json.dumps(stored, ensure_ascii=False), (column, value)
    finally:
        await store.aclose()


async def test_lone_surrogates_are_stored_without_error(store: RunStore, metrics: Metrics) -> None:
    run = Driver(store, task="a\ud800b", system_prompt="p\udfffq")
    run.status("running")
    run.event(RunEvent.MESSAGE, {"content": "m\ud800"})
    step = make_step(output="s\udc00t")
    run.event(RunEvent.TOOL_CALL_COMPLETED, step_data(step))
    run.complete(make_result(run, output="x\udc00y", steps=[step], warnings=["w\ud800"]))
    record = await store.get(run.run_id)
    assert record is not None and record.status == "completed"
    assert (record.task, record.output) == ("a\ufffdb", "x\ufffdy")
    assert len(record.steps) == 1 and record.steps[0].output == "s\ufffdt"
    assert [e.seq for e in await store.events(run.run_id)] == [1, 2, 3]
    assert counter(metrics, "bridge_store_errors_total") == 0 and not record.incomplete


# --- 10, 11: delete, migrations ---------------------------------------------------------------------


async def test_delete_removes_the_record_and_its_events(store: RunStore) -> None:
    gone, kept = Driver(store), Driver(store)
    for run in (gone, kept):
        run.status("running")
        run.event(RunEvent.STARTED, {})
        run.complete(make_result(run))
    assert await store.delete(gone.run_id) is True
    assert await store.get(gone.run_id) is None and await store.status_of(gone.run_id) is None
    assert await store.events(gone.run_id) == [] and await store.last_event(gone.run_id) is None
    assert await store.delete(gone.run_id) is False
    assert await store.status_of(kept.run_id) == "completed" and len(await store.events(kept.run_id)) == 2


async def test_reopening_a_current_store_skips_alembic(
    store: RunStore, url: str, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_upgrade(conn: Any) -> None:
        raise AssertionError("Alembic ran on an up-to-date store")

    monkeypatch.setattr(migrate_module, "_bring_up", no_upgrade)
    second = await RunStore.open(url, instance="gw-other", metrics=metrics)
    try:
        async with second.engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert versions == ["0005"] == [migrate_module.HEAD]
        run = Driver(second)
        run.status("running")
        await second.flush()
        assert await store.status_of(run.run_id) == "running"  # both stores share the tables
    finally:
        await second.aclose()


OPEN_AND_CLOSE = """
import asyncio, sys
from services.metrics import Metrics
from services.runs import RunStore

async def main() -> None:
    store = await RunStore.open(sys.argv[1], instance=sys.argv[2], metrics=Metrics())
    await store.aclose()

asyncio.run(main())
"""


async def test_gateway_processes_starting_together_on_a_new_database_all_migrate(url: str) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", OPEN_AND_CLOSE, url, f"gw-{i}", cwd=REPO, stderr=asyncio.subprocess.PIPE
        )
        for i in range(3)
    ]
    outcomes = [(await p.wait(), (await p.stderr.read()).decode()[-2000:]) for p in processes if p.stderr]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
