"""Circuit breakers: aiobreaker's failure counting and state machine, wrapped so that half-open
admits exactly ONE trial call and `Retry-After` comes from a monotonic clock (aiobreaker lets every
waiting caller through in half-open and mixes naive UTC and local datetimes)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal, TypeVar

import aiobreaker

from services.errors import BridgeError

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]
TRIAL_BUSY_RETRY_S = 1.0  # Retry-After for callers turned away while the one trial call runs


class Breaker:
    """Opens after `failures` consecutive failed calls for `reset_s`; then one trial call decides."""

    def __init__(
        self,
        name: str,
        *,
        failures: int,
        reset_s: float,
        counts: Callable[[BaseException], bool],
        unavailable: Callable[[str, float], BridgeError],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.reset_s = reset_s
        self._unavailable = unavailable
        self._clock = clock
        self._inner = aiobreaker.CircuitBreaker(
            fail_max=failures,
            timeout_duration=timedelta(seconds=reset_s),
            exclude=[lambda exc: not counts(exc)],
            name=name,
        )
        self._opened_at = 0.0
        self._tripped = False  # it opened since it was last seen closed: `admits` must look closer
        self._trial_running = False
        self.rejected = 0

    @property
    def state(self) -> State:
        state = self._inner.current_state
        if state == aiobreaker.CircuitBreakerState.OPEN:
            return "open" if self.retry_after() > 0 else "half_open"
        return "half_open" if state == aiobreaker.CircuitBreakerState.HALF_OPEN else "closed"

    def retry_after(self) -> float:
        """Seconds until a trial call may go through (0 when it may now)."""
        if self._inner.current_state != aiobreaker.CircuitBreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_s - self._clock())

    def _admits(self, state: State) -> bool:
        return state == "closed" or (state == "half_open" and not self._trial_running)

    def admits(self) -> bool:
        """Whether a call would go through now (one attribute read while it has not opened: routing asks it of
        every host before every call)."""
        if not self._tripped:
            return True
        state = self.state
        self._tripped = state != "closed"
        return self._admits(state)

    def check(self) -> None:
        """Fail fast if a call would be refused now (without counting or reserving anything)."""
        if not self._admits(self.state):
            raise self._refuse()

    def _refuse(self) -> BridgeError:
        self.rejected += 1
        wait = self.retry_after() or TRIAL_BUSY_RETRY_S
        return self._unavailable(f"{self.name} is failing; circuit open, retry in {wait:.1f} s", wait)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        state = self.state
        if not self._admits(state):
            raise self._refuse()
        trial = state == "half_open"
        if trial:
            self._trial_running = True
            self._inner.half_open()  # decided by our monotonic clock, not aiobreaker's datetimes
        try:
            result: T = await self._inner.call_async(fn)
            return result
        except aiobreaker.CircuitBreakerError as exc:  # it just opened (threshold reached or trial failed)
            self._opened_at = self._clock()
            self._tripped = True
            raise exc.__cause__ or exc from None
        finally:
            if trial:
                self._trial_running = False
