"""Evals: the suite run on chosen models (each with chosen aids), in the background (`POST /v1/evals`) or
awaited (`lmstudio-bridge eval`), stored, listed, and each model's newest `tool_score` for `/v1/models`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from services.access import Access
from services.agent.aids import Aids
from services.agent.ports import Models
from services.agent.scope import resolve_model
from services.errors import BridgeError, EvalNotFoundError, InvalidRequestError, QueueFullError
from services.evals.records import EvalRecord
from services.evals.runner import EvalPlan, EvalRunner, OnTask, Suffix
from services.evals.scorecard import TaskOutcome, summarise
from services.evals.store import EvalStore
from services.evals.suite import select

log = logging.getLogger("lmstudio_bridge.evals")
MAX_WAITING_EVALS = 32


class EvalService:
    """Starts, runs and reads evals; keeps each model's newest `tool_score` in memory."""

    def __init__(
        self,
        runner: EvalRunner,
        store: EvalStore,
        catalog: Models,
        *,
        seed: int,
        temperature: float,
        scores: dict[str, float] | None = None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.catalog = catalog
        self.seed = seed
        self.temperature = temperature
        self.scores: dict[str, float] = scores if scores is not None else {}  # shared with routing by score
        self._tasks: set[asyncio.Task[EvalRecord]] = set()
        self._turn = asyncio.Lock()  # one eval at a time
        self._waiting: set[str] = set()  # background evals not started yet

    async def start(self) -> None:
        """Evals this instance left running are interrupted; the stored scores are read."""
        await self.store.interrupt_unfinished()
        self.scores.update(await self.store.scores())

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def plan(
        self,
        model: str | None,
        aids: Aids,
        tasks: list[str] | None = None,
        *,
        access: Access | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        suffix: Suffix | None = None,
    ) -> EvalPlan:
        """A plan for one model, checked before anything runs (model within the key's scope, task names)."""
        try:
            chosen = select(tasks)
        except KeyError as exc:
            raise InvalidRequestError(f"Unknown eval task(s) or kind(s): {exc.args[0]}") from None
        resolved = await resolve_model(self.catalog, model, access)
        return EvalPlan(resolved.id, chosen, aids, self.seed, self.temperature, max_tokens, timeout_s, access, suffix)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def run(self, plan: EvalPlan, on_task: OnTask | None = None) -> EvalRecord:
        """Run the plan to its end, after the evals before it (stored as it goes; `on_task` hears of each task as
        it ends); returns the eval's record."""
        record = await self._created(plan)
        return await self._carry_out(record, plan, on_task)

    async def submit(self, plans: list[EvalPlan]) -> list[EvalRecord]:
        """Queue each plan to run in the background; returns the records as created (`queued`). Evals run one at
        a time (they share the engines and would skew each other's times); 429 `queue_full` beyond
        MAX_WAITING_EVALS."""
        if self.waiting + len(plans) > MAX_WAITING_EVALS:
            detail = f"{self.waiting} evals are already waiting (at most {MAX_WAITING_EVALS})"
            raise QueueFullError(detail, retry_after=60)
        records = [await self._created(plan) for plan in plans]
        self._waiting.update(r.eval_id for r in records)
        task = asyncio.create_task(self._in_turn(list(zip(records, plans, strict=True))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return records

    async def _created(self, plan: EvalPlan) -> EvalRecord:
        record = EvalRecord(
            eval_id=f"eval_{uuid.uuid4().hex[:24]}",
            status="queued",
            model=plan.model,
            aids=plan.aids.names,
            seed=plan.seed,
            temperature=plan.temperature,
            key_name=plan.access.name if plan.access is not None else None,
        )
        await self.store.create(record)
        return record

    async def _in_turn(self, pairs: list[tuple[EvalRecord, EvalPlan]]) -> EvalRecord:
        last = pairs[-1][0]
        for index, (record, plan) in enumerate(pairs):
            try:
                last = await self._carry_out(record, plan)
            except asyncio.CancelledError:
                self._waiting.difference_update(left.eval_id for left, _ in pairs[index:])
                for left, _ in pairs[index:]:  # the gateway stops: this one and those not started
                    left.status = "interrupted"
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.store.save(left))
                raise
        return last

    async def _carry_out(self, record: EvalRecord, plan: EvalPlan, on_task: OnTask | None = None) -> EvalRecord:
        async def progress(outcome: TaskOutcome) -> None:
            record.tasks.append(outcome)
            record.summary = summarise(record.tasks)
            await self.store.save(record)
            if on_task is not None:
                await on_task(outcome)

        try:
            async with self._turn:
                self._waiting.discard(record.eval_id)
                record.status = "running"
                await self.store.save(record)
                await self.runner.run(plan, progress)
        except BridgeError as exc:
            record.status, record.error = "failed", exc.detail
        except Exception as exc:
            log.exception("eval %s failed", record.eval_id)
            record.status, record.error = "failed", f"The eval failed unexpectedly: {type(exc).__name__}"
        else:
            record.status = "completed"
            record.summary = summarise(record.tasks)
            self.scores[record.model] = record.summary.tool_score
        await self.store.save(record)
        return record

    async def get(self, eval_id: str) -> EvalRecord:
        record = await self.store.get(eval_id)
        if record is None:
            raise EvalNotFoundError(f"No eval with id {eval_id!r}")
        return record

    async def newest(self, limit: int = 50, model: str | None = None) -> list[EvalRecord]:
        return await self.store.newest(limit, model)
