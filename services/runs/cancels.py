"""Cancel requests between gateway processes sharing one run store.

A process asked to cancel a run that another process executes records the request in the run's row
(`cancel_requested_at`) and answers as a local cancel does. Every process, while it has runs in flight, looks
every `CANCEL_POLL_S` for requests on them (one indexed query by run id) and hands each, once, to the store's
`cancel_requests` queue, from which the run service takes it and cancels the run as a local request would: it
then ends `cancelled`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.agent import UNFINISHED_STATUSES
from services.metrics import Metrics
from services.runs.tables import runs

log = logging.getLogger("lmstudio_bridge.store")

CANCEL_POLL_S = 0.5  # how often a process with runs in flight looks for cancel requests made through another one
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


class CancelStore(Protocol):
    """What the watch needs of its store (`RunStore`): the database, the counters, this process's runs in
    flight, and where a request goes (`cancel_requests`)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def live(self) -> Collection[str]: ...

    @property
    def cancel_requests(self) -> asyncio.Queue[str]: ...


class CancelWatch:
    """Polls for cancel requests on this process's runs in flight and hands each to `store.cancel_requests`
    once."""

    def __init__(self, store: CancelStore) -> None:
        self.store = store
        self.delivered: set[str] = set()
        self._failing = False

    async def check(self) -> list[str]:
        """Look once; returns the runs whose request was handed on now."""
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
            self.store.cancel_requests.put_nowait(run_id)
        return new

    async def run(self) -> None:
        """Look for ever; a failed look is counted, and logged when the one before succeeded."""
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                await self.check()
                self._failing = False
            except Exception as exc:
                self.store.metrics.store_errors.inc()
                if not self._failing:
                    log.warning("run store: looking for cancel requests failed (%s); trying again", exc)
                self._failing = True
