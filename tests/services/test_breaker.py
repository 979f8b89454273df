"""The breaker wrapper: opening, one trial call in half-open, monotonic Retry-After, recovery."""

from __future__ import annotations

import asyncio

import pytest

from services.breaker import Breaker
from services.errors import BridgeError, LLMConnectionError, LLMValidationError, UpstreamUnavailableError
from tests.helpers import eventually


def state_now(breaker: Breaker) -> str:
    """The breaker's state read afresh (a checker would keep what an earlier assert on `.state` narrowed)."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, failures: int = 3, reset_s: float = 30.0) -> Breaker:
    return Breaker(
        "LM Studio",
        failures=failures,
        reset_s=reset_s,
        counts=lambda exc: isinstance(exc, LLMConnectionError),
        unavailable=lambda detail, wait: UpstreamUnavailableError(detail, retry_after=wait),
        clock=clock,
    )


async def fail() -> None:
    raise LLMConnectionError("down")


async def ok() -> str:
    return "ok"


async def tripped(clock: Clock, reset_s: float = 5) -> Breaker:
    """A breaker that one failure opens, just opened."""
    breaker = make(clock, failures=1, reset_s=reset_s)
    with pytest.raises(LLMConnectionError):
        await breaker.call(fail)
    assert breaker.state == "open"
    return breaker


async def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = make(clock)
    for _ in range(3):
        with pytest.raises(LLMConnectionError):  # the real error, not a breaker error
            await breaker.call(fail)
    assert breaker.state == "open"
    with pytest.raises(UpstreamUnavailableError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == pytest.approx(30.0)
    clock.now += 12
    assert breaker.retry_after() == pytest.approx(18.0)


async def test_success_resets_the_count_and_other_errors_do_not_count() -> None:
    breaker = make(Clock())
    for _ in range(2):
        with pytest.raises(LLMConnectionError):
            await breaker.call(fail)
    assert await breaker.call(ok) == "ok"
    for _ in range(2):
        with pytest.raises(LLMConnectionError):
            await breaker.call(fail)

    async def rejected() -> None:
        raise LLMValidationError("400")

    for _ in range(5):
        with pytest.raises(LLMValidationError):
            await breaker.call(rejected)
    assert breaker.state == "closed"


async def test_half_open_admits_exactly_one_trial_among_20_callers() -> None:
    clock = Clock()
    breaker = await tripped(clock)
    clock.now += 5
    assert breaker.state == "half_open"
    entered = 0
    gate = asyncio.Event()

    async def trial() -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    async def caller() -> str | BridgeError:
        try:
            return await breaker.call(trial)
        except UpstreamUnavailableError as exc:
            return exc

    tasks = [asyncio.ensure_future(caller()) for _ in range(20)]
    await eventually(lambda: entered == 1 and sum(t.done() for t in tasks) == 19, what="19 callers turned away")
    gate.set()
    results = await asyncio.gather(*tasks)
    assert entered == 1
    assert results.count("ok") == 1
    assert all(isinstance(r, UpstreamUnavailableError) and r.retry_after for r in results if r != "ok")
    assert state_now(breaker) == "closed"  # the trial succeeded: recovery closes the breaker
    assert await breaker.call(ok) == "ok"


async def test_failed_trial_reopens() -> None:
    clock = Clock()
    breaker = await tripped(clock)
    clock.now += 5
    with pytest.raises(LLMConnectionError):
        await breaker.call(fail)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(5.0)


async def test_cancelled_trial_lets_the_next_caller_try() -> None:
    clock = Clock()
    breaker = await tripped(clock)
    clock.now += 5
    trial_started = asyncio.Event()

    async def trial() -> None:
        trial_started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(breaker.call(trial))
    await eventually(trial_started.is_set, what="the trial call started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.call(ok) == "ok"


async def test_retry_after_ignores_the_wall_clock_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: aiobreaker's own datetimes would be off by hours
    import time as time_module

    time_module.tzset()
    try:
        breaker = await tripped(Clock(), reset_s=30)
        assert 0 < breaker.retry_after() <= 30
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()


async def test_admits_follows_the_state_through_open_trial_and_close() -> None:
    clock = Clock()
    breaker = make(clock, failures=2)
    assert breaker.admits()
    with pytest.raises(LLMConnectionError):
        await breaker.call(fail)
    assert breaker.admits()  # one failure of two: still closed
    with pytest.raises(LLMConnectionError):
        await breaker.call(fail)
    assert not breaker.admits()  # open
    clock.now += 30
    assert breaker.admits()  # half-open: the trial may go
    trial = asyncio.Event()

    async def slow_ok() -> str:
        await trial.wait()
        return "ok"

    running = asyncio.ensure_future(breaker.call(slow_ok))
    await eventually(lambda: not breaker.admits(), what="the trial call holds the breaker")
    trial.set()
    assert await running == "ok"
    assert breaker.state == "closed" and breaker.admits()
    with pytest.raises(LLMConnectionError):
        await breaker.call(fail)
    assert breaker.admits()  # closed again: the count starts over
