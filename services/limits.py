"""Backpressure: a bounded number of runs at once and a bounded wait for a slot."""

from __future__ import annotations

import asyncio

from services.errors import OverloadedError


class RunLimiter:
    """At most `max_runs` runs at once; a caller waits at most `queue_timeout_s` for a slot
    (the queued runs of `POST /v1/runs` wait as long as it takes: `acquire(bounded=False)`)."""

    def __init__(self, max_runs: int, queue_timeout_s: float) -> None:
        self.max_runs = max_runs
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(max_runs)
        self.in_flight = 0
        self.rejected = 0

    async def try_acquire(self) -> bool:
        """Take a slot if one is free now (a free semaphore is taken without waiting)."""
        if self._slots.locked():
            return False
        await self._slots.acquire()
        self.in_flight += 1
        return True

    async def acquire(self, *, bounded: bool = True) -> None:
        if not self._slots.locked():  # a free slot: taken at once, no timer (asyncio.timeout costs one per call)
            await self._slots.acquire()
            self.in_flight += 1
            return
        try:
            async with asyncio.timeout(self.queue_timeout_s if bounded else None):
                await self._slots.acquire()
        except TimeoutError:
            self.rejected += 1
            raise OverloadedError(
                f"{self.max_runs} runs are in progress and no slot freed up within {self.queue_timeout_s:g} s",
                retry_after=max(1.0, self.queue_timeout_s),
            ) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()
