"""Cancel requests and approval decisions between gateway processes sharing one run store.

A process asked to cancel a run that another process executes records the request in the run's row
(`cancel_requested_at`); one asked to decide on a tool call of such a run records the decision in `approvals`
(one row per call: the first decision wins; rows go with their run) once the run's stored events show the call
awaiting one. Both
answer as the executing process would. Every process, while it has runs in flight, looks every `RELAY_POLL_S`
for requests on them (one indexed query by run id; a second one only while some of its runs await approval)
and hands each, once, to the store's `cancel_requests` or `decisions` queue, from which the run service takes
it and acts as on a local request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Protocol, cast

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.agent import UNFINISHED_STATUSES, RunEvent
from services.agent.approvals import Decision, Verdict
from services.metrics import Metrics
from services.runs.journal import RunJournal
from services.runs.tables import approvals, run_events, runs

log = logging.getLogger("lmstudio_bridge.store")

RELAY_POLL_S = 0.5  # how often a process with runs in flight looks for requests made through another one
_CHUNK = 500  # run ids per `IN (...)`


async def request_cancel(engine: AsyncEngine, run_id: str) -> bool:
    """Record a request to cancel the run; False when it has already ended (or there is no such run)."""
    async with engine.begin() as conn:
        found = await conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.status.in_(UNFINISHED_STATUSES))
            .values(cancel_requested_at=time.time())
        )
    return bool(found.rowcount)


async def awaiting_calls(engine: AsyncEngine, run_id: str) -> list[str]:
    """The tool calls of the run that its stored events show awaiting a decision (asked, not yet decided, and
    no decision recorded for them here), sorted."""
    asked: set[str] = set()
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(run_events.c.event, run_events.c.data)
            .where(
                run_events.c.run_id == run_id,
                run_events.c.event.in_((RunEvent.APPROVAL_REQUESTED, RunEvent.APPROVAL_DECIDED)),
            )
            .order_by(run_events.c.seq)
        )
        for event, data in rows:
            call_id = json.loads(data).get("tool_call_id")
            (asked.add if event == RunEvent.APPROVAL_REQUESTED else asked.discard)(call_id)
        if asked:
            relayed = await conn.execute(select(approvals.c.tool_call_id).where(approvals.c.run_id == run_id))
            asked.difference_update(relayed.scalars())
    return sorted(asked)


async def record_decision(engine: AsyncEngine, run_id: str, tool_call_id: str, decision: Decision) -> bool:
    """Record a decision for the process that executes the run; False when one is recorded already."""
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(approvals).values(
                    run_id=run_id,
                    tool_call_id=tool_call_id,
                    verdict=decision.verdict,
                    reason=decision.reason,
                    at=time.time(),
                )
            )
    except IntegrityError:
        return False
    return True


class RelayStore(Protocol):
    """What the watch needs of its store (`RunStore`): the database, the counters, this process's runs in
    flight (their journals: which await approval), and where requests go (`cancel_requests`, `decisions`)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def live(self) -> Mapping[str, RunJournal]: ...

    @property
    def cancel_requests(self) -> asyncio.Queue[str]: ...

    @property
    def decisions(self) -> asyncio.Queue[tuple[str, str, Decision]]: ...


class RelayWatch:
    """Polls for cancel requests and decisions on this process's runs in flight and hands each on once."""

    def __init__(self, store: RelayStore) -> None:
        self.store = store
        self.delivered: set[str] = set()  # runs whose cancel request was handed on
        self.decided: dict[str, set[str]] = {}  # run id -> its calls whose relayed decision was handed on
        self._failing = False

    async def check(self) -> list[str]:
        """Look once; returns the runs whose cancel request was handed on now (decisions are handed on too)."""
        live = list(self.store.live)
        self.delivered.intersection_update(live)
        if not live:
            return []
        found: list[str] = []
        async with self.store.engine.connect() as conn:
            for start in range(0, len(live), _CHUNK):
                query = select(runs.c.run_id).where(
                    runs.c.run_id.in_(live[start : start + _CHUNK]), runs.c.cancel_requested_at.is_not(None)
                )
                found += (await conn.execute(query)).scalars()
        new = [run_id for run_id in found if run_id not in self.delivered]
        for run_id in new:
            self.delivered.add(run_id)
            log.info("run %s: cancelled through another gateway process", run_id)
            self.store.metrics.relayed.labels("cancel", "received").inc()
            self.store.cancel_requests.put_nowait(run_id)
        await self.check_decisions()
        return new

    async def check_decisions(self) -> int:
        """Hand on the decisions recorded for this process's runs awaiting approval, each once; how many. The
        rows stay (a second decision on the call finds its row and is refused) until the run is deleted."""
        waiting = [run_id for run_id, journal in self.store.live.items() if journal.last_status == "awaiting_approval"]
        for run_id in [run_id for run_id in self.decided if run_id not in self.store.live]:
            del self.decided[run_id]
        if not waiting:
            return 0
        taken: list[tuple[str, str, str, str]] = []
        async with self.store.engine.connect() as conn:
            for start in range(0, len(waiting), _CHUNK):
                rows = await conn.execute(
                    select(approvals.c.run_id, approvals.c.tool_call_id, approvals.c.verdict, approvals.c.reason).where(
                        approvals.c.run_id.in_(waiting[start : start + _CHUNK])
                    )
                )
                taken += [row for row in rows.tuples() if row[1] not in self.decided.get(row[0], ())]
        for run_id, call_id, verdict, reason in taken:
            self.decided.setdefault(run_id, set()).add(call_id)
            log.info("run %s: tool call %s decided through another gateway process (%s)", run_id, call_id, verdict)
            self.store.metrics.relayed.labels("approval", "received").inc()
            self.store.decisions.put_nowait((run_id, call_id, Decision(cast(Verdict, verdict), reason)))
        return len(taken)

    async def run(self) -> None:
        """Look for ever; a failed look is counted, and logged when the one before succeeded."""
        while True:
            await asyncio.sleep(RELAY_POLL_S)
            try:
                await self.check()
                self._failing = False
            except Exception as exc:
                self.store.metrics.store_errors.inc()
                if not self._failing:
                    log.warning("run store: looking for requests of other gateway processes failed (%s)", exc)
                self._failing = True
