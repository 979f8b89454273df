"""Runs that outlive their request (`POST /v1/runs`, the MCP front door's `start_task`): started in the
background, queued while every run slot is taken, cancelled, decided on (approvals), read back from the store.

A run is executed by the gateway process that accepted it. Another process sharing the store reads it,
follows its events, cancels it and decides on its tool calls through requests in the store, which the owner
acts on (`relay.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from services.access import Access
from services.agent import FINISHED_STATUSES, UNFINISHED_STATUSES, AgentService, Run, RunSpec, StageSpec
from services.agent.approvals import Decision
from services.errors import (
    ApprovalNotFoundError,
    BridgeError,
    QueueFullError,
    RunActiveError,
    RunFinishedError,
    RunInterruptedError,
    RunNotFoundError,
    StoreUnavailableError,
)
from services.runs.records import RunPage, RunRecord, StoredEvent
from services.runs.relay import awaiting_calls, record_decision
from services.runs.store import POLL_S, RunFilter, RunStore

log = logging.getLogger("lmstudio_bridge.runs")

VISIBLE_WITHIN_S = 5.0  # a new background run is answered once it is written, or after this long (store slow)
DECISION_LAG_S = 1.0  # a call another process's run awaits may reach the store this much after its SSE event


class RunService:
    """Background runs over one agent service and run store."""

    def __init__(self, agent: AgentService, store: RunStore, max_queued: int) -> None:
        self.agent = agent
        self.store = store
        self.max_queued = max_queued
        self.waiting: set[str] = set()  # queued runs: no run slot yet
        self.stopping = False
        self.runs: dict[str, tuple[Run, asyncio.Task[None]]] = {}  # background runs not finished yet
        # what another gateway process asks to cancel (or recorded interrupted) reaches the store: stop it here
        self._cancels = asyncio.create_task(self._follow_cancel_requests())
        self._decisions = asyncio.create_task(self._follow_decisions())

    @property
    def queued(self) -> int:
        return len(self.waiting)

    async def submit(self, spec: RunSpec, stages: list[StageSpec] | None = None) -> Run:
        """Check the spec (or every step of a pipeline) and start the run in the background (queued when no
        slot is free)."""
        spec.store, spec.interactive = True, True
        run = await (self.agent.prepare_pipeline(spec, stages) if stages else self.agent.prepare(spec))
        if await self.agent.limiter.try_acquire():
            run.hold_slot()
            run.set_status("running")
        elif self.queued >= self.max_queued:
            run.release()  # the key's run
            raise QueueFullError(
                f"{self.queued} runs are already waiting for a slot (BRIDGE_MAX_QUEUED_RUNS)", retry_after=5
            )
        else:
            self.waiting.add(run.run_id)
            run.set_status("queued")
        answered = asyncio.Event()
        task = asyncio.create_task(self._drive(run, answered), name=run.run_id)
        self.runs[run.run_id] = (run, task)
        try:  # written before the answer (which gives its status as it is now), so that every gateway process
            # sharing the store finds it at `Location`; a run whose row is not committed by then is not started
            with contextlib.suppress(TimeoutError):
                await self.store.flush(within_s=VISIBLE_WITHIN_S)
            if not self.store.durable(run.run_id):
                self.store.forget(run.run_id)
                task.cancel()
                self._end_unstarted(run)
                raise StoreUnavailableError(
                    "The run could not be recorded (the run store takes no writes now); it was not started",
                    retry_after=5,
                )
        finally:
            answered.set()
        return run

    async def _drive(self, run: Run, answered: asyncio.Event) -> None:
        try:
            await answered.wait()
            if run.run_id in self.waiting:
                try:
                    await self.agent.limiter.acquire(bounded=False)
                finally:
                    self.waiting.discard(run.run_id)
                run.hold_slot()
                if not self.agent.accepting:  # the gateway began to stop while the run waited
                    run.release()
                    raise asyncio.CancelledError
            await run.execute()
        except asyncio.CancelledError:
            if run.task is None:  # cancelled (or stopped) while queued: `execute` never wrote its end
                self._end_unstarted(run)
        except BridgeError:
            pass  # recorded by the run: status failed (or interrupted) with its problem document
        except Exception:
            log.exception("background run %s failed", run.run_id)
        finally:
            self.runs.pop(run.run_id, None)

    def _end_unstarted(self, run: Run) -> None:
        """Record the end of a run that never executed (idempotent): cancelled, or interrupted by a stop.
        Its task may never get to run its own body, so this does the task's bookkeeping too."""
        self.waiting.discard(run.run_id)
        self.runs.pop(run.run_id, None)
        run.release()  # the slot of a run that had one but never executed (idempotent)
        if run.status in FINISHED_STATUSES:
            return
        if self.stopping or not self.agent.accepting:
            run.finish("interrupted", None, RunInterruptedError("The gateway stopped before the run started").problem())
        else:
            run.finish("cancelled", run.result("cancelled", "The run was cancelled before it started."), None)

    def _live(self, run_id: str) -> Run | None:
        entry = self.runs.get(run_id)
        if entry is not None:
            return entry[0]
        return next((run for run in self.agent.active if run.run_id == run_id), None)

    async def _status(self, run_id: str, access: Access | None) -> str:
        """The stored run's status; RunNotFoundError when there is none, or it is another key's run
        (a key sees only its own runs, unless it is an admin)."""
        found = await self.store.status_and_key(run_id)
        if found is None or not _may_see(access, found[1]):
            raise RunNotFoundError(f"No run with id {run_id!r}")
        return found[0]

    async def get(self, run_id: str, access: Access | None = None) -> RunRecord:
        record = await self.store.get(run_id)
        if record is None or not _may_see(access, record.key_name):
            raise RunNotFoundError(f"No run with id {run_id!r}")
        return record

    async def page(self, filters: RunFilter, limit: int, cursor: str | None, access: Access | None = None) -> RunPage:
        if access is not None and not access.admin:
            filters = replace(filters, key_name=access.name)
        return await self.store.page(filters, limit, cursor)

    async def events(self, run_id: str, after: int, access: Access | None = None) -> AsyncIterator[StoredEvent]:
        """The run's events after `after`, following it live; raises RunNotFoundError before the first."""
        await self._status(run_id, access)
        return self.store.follow(run_id, after)

    async def cancel(self, run_id: str, access: Access | None = None) -> None:
        """Stop a run that has not ended (it ends `cancelled`); RunFinishedError once it has. A run that another
        gateway process executes gets a cancel request in the store, which that process acts on."""
        status = await self._status(run_id, access)
        if self._cancel_here(run_id):
            return
        if self._live(run_id) is None and status in UNFINISHED_STATUSES:
            if await self.store.request_cancel(run_id):
                self.store.metrics.relayed.labels("cancel", "sent").inc()
                return
            status = await self.store.status_of(run_id) or status  # it ended meanwhile
        raise RunFinishedError(f"Run {run_id} has already ended ({status})", run_status=status)

    def _cancel_here(self, run_id: str) -> bool:
        """Cancel a run of this process: stop it if it executes, end it if it is queued; False when neither."""
        entry = self.runs.get(run_id)
        run = self._live(run_id)
        if run is not None and run.cancel():
            return True
        if entry is not None and entry[0].task is None:  # still queued
            self._end_unstarted(entry[0])
            entry[1].cancel()
            return True
        return False

    async def _follow_cancel_requests(self) -> None:
        """Runs of ours that another gateway process was asked to cancel (or recorded interrupted): stop each."""
        while True:
            run_id = await self.store.cancel_requests.get()
            try:
                if not self._cancel_here(run_id):
                    log.info("run %s: a cancel request came from another gateway process, but it has ended", run_id)
            except Exception:
                log.exception("run %s: the cancel request of another gateway process failed here", run_id)

    async def delete(self, run_id: str, access: Access | None = None) -> None:
        status = await self._status(run_id, access)
        if self._live(run_id) is not None or run_id in self.runs or status in UNFINISHED_STATUSES:
            raise RunActiveError(f"Run {run_id} has not ended ({status}); cancel it first")
        if not await self.store.delete(run_id):  # a concurrent DELETE took it: one 204, the others 404
            raise RunNotFoundError(f"No run with id {run_id!r}")

    async def decide(self, run_id: str, tool_call_id: str, decision: Decision, access: Access | None = None) -> None:
        """A person's decision on a call the run awaits; a run that another gateway process executes gets it
        through the store (`relay.py`). ApprovalNotFoundError when no such call awaits one."""
        status = await self._status(run_id, access)
        run = self._live(run_id)
        if run is not None:
            if run.decide(tool_call_id, decision):
                return
            waiting = run.waiting
        elif status in UNFINISHED_STATUSES:
            waiting = await self._remote_waiting(run_id, tool_call_id)
            if tool_call_id in waiting and await record_decision(self.store.engine, run_id, tool_call_id, decision):
                self.store.metrics.relayed.labels("approval", "sent").inc()
                return
            waiting = [call for call in waiting if call != tool_call_id]
        else:
            waiting = []
        raise ApprovalNotFoundError(
            f"No tool call {tool_call_id!r} of run {run_id} awaits a decision", awaiting=waiting
        )

    async def _remote_waiting(self, run_id: str, tool_call_id: str) -> list[str]:
        """The calls another process's run awaits a decision on, as stored; while the run awaits approval but
        the call is not stored yet (its owner writes in batches), looked at again for up to `DECISION_LAG_S`."""
        deadline = time.monotonic() + DECISION_LAG_S
        while True:
            await self.store.flush()
            waiting = await awaiting_calls(self.store.engine, run_id)
            if tool_call_id in waiting or time.monotonic() >= deadline:
                return waiting
            if await self.store.status_of(run_id) not in ("running", "awaiting_approval"):
                return waiting
            await asyncio.sleep(POLL_S / 5)

    async def _follow_decisions(self) -> None:
        """Decisions on runs of ours made through another gateway process: hand each to its run."""
        while True:
            run_id, tool_call_id, decision = await self.store.decisions.get()
            run = self._live(run_id)
            if run is None or not run.decide(tool_call_id, decision):
                log.info(
                    "run %s: a decision on %s came from another gateway process, but no longer applies",
                    run_id,
                    tool_call_id,
                )

    async def wait(self, run_id: str, timeout_s: float, access: Access | None = None) -> RunRecord:
        """The run's record once it ended, or as it stands after `timeout_s`."""
        status = await self._status(run_id, access)
        entry = self.runs.get(run_id)
        if entry is not None:
            await asyncio.wait([entry[1]], timeout=timeout_s)
        elif status in UNFINISHED_STATUSES:  # a run of another gateway process (or a synchronous one): poll
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(POLL_S, left))
                if await self.store.status_of(run_id) not in UNFINISHED_STATUSES:
                    break
        return await self.get(run_id, access)

    async def aclose(self) -> None:
        """Stop background runs (the gateway stops): each is recorded `interrupted`."""
        self.stopping = True
        self._cancels.cancel()
        self._decisions.cancel()
        tasks = [task for _, task in self.runs.values()]
        for run, task in list(self.runs.values()):
            if run.task is None:
                self._end_unstarted(run)
                task.cancel()
            else:
                run.stop_for_shutdown()
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
        await asyncio.gather(self._cancels, self._decisions, return_exceptions=True)


def _may_see(access: Access | None, key_name: str | None) -> bool:
    """A key sees its own runs; an admin key (or a gateway without keys) sees every run."""
    return access is None or access.admin or access.name == key_name
