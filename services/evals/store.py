"""Evals in the run store's database (the `evals` table); their tasks' runs are the store's ordinary runs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.evals.records import OUTCOMES, SUMMARY, EvalRecord
from services.runs.tables import evals


def _when(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _record(row: Any) -> EvalRecord:
    return EvalRecord(
        eval_id=row["eval_id"],
        status=row["status"],
        model=row["model"],
        aids=json.loads(row["aids"]),
        seed=row["seed"],
        temperature=row["temperature"],
        tasks=OUTCOMES.validate_json(row["tasks"]),
        summary=SUMMARY.validate_json(row["summary"]) if row["summary"] else None,
        error=row["error"],
        key_name=row["key_name"],
        created_at=_when(row["created_at"]),
        finished_at=_when(row["finished_at"]),
    )


class EvalStore:
    """Writes and reads evals over the run store's engine."""

    def __init__(self, engine: AsyncEngine, instance: str) -> None:
        self.engine = engine
        self.instance = instance

    async def create(self, record: EvalRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(evals).values(
                    eval_id=record.eval_id,
                    status=record.status,
                    model=record.model,
                    aids=json.dumps(record.aids),
                    seed=record.seed,
                    temperature=record.temperature,
                    tasks="[]",
                    key_name=record.key_name,
                    instance=self.instance,
                    created_at=time.time(),
                )
            )

    async def save(self, record: EvalRecord) -> None:
        """The eval's outcomes, scorecard and status as they stand (finished_at once it has ended)."""
        values: dict[str, Any] = {
            "status": record.status,
            "tasks": OUTCOMES.dump_json(record.tasks).decode(),
            "summary": SUMMARY.dump_json(record.summary).decode() if record.summary else None,
            "error": record.error,
        }
        if record.status not in ("queued", "running"):
            values["finished_at"] = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(update(evals).where(evals.c.eval_id == record.eval_id).values(**values))

    async def interrupt_unfinished(self) -> None:
        """Evals this instance left running (a restart): interrupted."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(evals)
                .where(evals.c.status.in_(("queued", "running")), evals.c.instance == self.instance)
                .values(status="interrupted", finished_at=time.time())
            )

    async def get(self, eval_id: str) -> EvalRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(evals).where(evals.c.eval_id == eval_id))).mappings().first()
        return _record(row) if row is not None else None

    async def newest(self, limit: int, model: str | None = None) -> list[EvalRecord]:
        query = select(evals).order_by(evals.c.num.desc()).limit(limit)
        if model is not None:
            query = query.where(evals.c.model == model)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def scores(self) -> dict[str, float]:
        """Each model's `tool_score`: that of its newest completed eval."""
        newest = (
            select(evals.c.model, func.max(evals.c.num).label("num"))
            .where(evals.c.status == "completed")
            .group_by(evals.c.model)
            .subquery()
        )
        query = select(evals.c.model, evals.c.summary).join(newest, evals.c.num == newest.c.num)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {model: SUMMARY.validate_json(summary).tool_score for model, summary in rows if summary}
