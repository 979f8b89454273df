"""Per-key limits counted in the shared PostgreSQL store (`services/runs/key_limits.py`): two gateway processes'
counters on one database give a key its `requests_per_minute` and `max_concurrent_runs` once, not twice; the
runs of a process that lost its lease stop counting; a store that does not answer refuses limited keys (503
`key_limits_unavailable`) and lets unlimited ones through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.access import Access
from services.errors import KeyLimitsUnavailableError, KeyRateLimitedError
from services.metrics import Metrics
from services.runs import RunStore
from services.runs.engines import async_engine
from services.runs.key_limits import StoreKeyLimits
from services.runs.tables import instances

pytestmark = pytest.mark.timeout(60)

RATE = Access(name="rated", requests_per_minute=6)  # a token every 10 s, at most 6
TWO = Access(name="two-runs", max_concurrent_runs=2)
FREE = Access(name="free")


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[StoreKeyLimits, StoreKeyLimits]]:
    """The key limits of two gateway processes (each with its store and lease) on one PostgreSQL database."""
    stores = [await RunStore.open(postgres_url, instance=name, metrics=Metrics()) for name in ("gw-a", "gw-b")]
    limits = [StoreKeyLimits(store.engine, store.instance, store.metrics) for store in stores]
    for each in limits:
        await each.start()
    yield limits[0], limits[1]
    for each, store in zip(limits, stores, strict=True):
        await each.aclose()
        await store.aclose()


def checks(limits: StoreKeyLimits, limit: str, outcome: str) -> float:
    return (
        limits.metrics.registry.get_sample_value("bridge_key_limit_checks_total", {"limit": limit, "outcome": outcome})
        or 0.0
    )


async def settled(limits: StoreKeyLimits) -> None:
    """The rows written for runs that ended (`leave_run` writes in the background)."""
    await asyncio.gather(*limits._tasks)


async def test_requests_per_minute_hold_across_processes(replicas: tuple[StoreKeyLimits, StoreKeyLimits]) -> None:
    a, b = replicas
    for index in range(6):
        await (a if index % 2 else b).take_request(RATE)
    for each in (a, b):
        with pytest.raises(KeyRateLimitedError) as caught:
            await each.take_request(RATE)
        assert caught.value.status == 429 and caught.value.problem()["code"] == "key_rate_limited"
        assert 1 <= (caught.value.retry_after or 0) <= 10
    for _ in range(50):
        await a.take_request(FREE)  # no limit: never counted
    assert checks(a, "requests", "allowed") + checks(b, "requests", "allowed") == 6
    assert checks(a, "requests", "limited") == checks(b, "requests", "limited") == 1


async def test_concurrent_runs_hold_across_processes(replicas: tuple[StoreKeyLimits, StoreKeyLimits]) -> None:
    a, b = replicas
    await a.enter_run(TWO)
    await b.enter_run(TWO)
    for each in (a, b):
        with pytest.raises(KeyRateLimitedError) as caught:
            await each.enter_run(TWO)
        assert "may run 2 run(s) at once; 2 are in flight" in caught.value.detail
    a.leave_run(TWO)
    await settled(a)
    await b.enter_run(TWO)  # A's run ended: B may start one
    with pytest.raises(KeyRateLimitedError):
        await a.enter_run(TWO)
    # concurrent entries of one key through both processes: never more than the limit
    b.leave_run(TWO)
    b.leave_run(TWO)
    await settled(b)
    results = await asyncio.gather(*(each.enter_run(TWO) for each in (a, b) * 5), return_exceptions=True)
    assert sum(result is None for result in results) == 2, results
    assert all(isinstance(r, KeyRateLimitedError) for r in results if r is not None)


async def test_runs_of_a_process_without_a_lease_do_not_count(replicas: tuple[StoreKeyLimits, StoreKeyLimits]) -> None:
    a, b = replicas
    await a.enter_run(TWO)
    await a.enter_run(TWO)
    with pytest.raises(KeyRateLimitedError):
        await b.enter_run(TWO)
    async with a.engine.begin() as conn:  # A's lease claimed (it died): its rows no longer count
        await conn.execute(instances.delete().where(instances.c.id == "gw-a"))
    await b.enter_run(TWO)


async def test_a_store_that_does_not_answer_refuses_limited_keys_only() -> None:
    engine = async_engine("postgresql+asyncpg://bridge@127.0.0.1:9/nowhere")  # nothing listens there
    limits = StoreKeyLimits(engine, "gw-lost", Metrics())
    try:
        for check in (limits.take_request, limits.enter_run):
            with pytest.raises(KeyLimitsUnavailableError) as caught:
                await check(Access(name="limited", requests_per_minute=5, max_concurrent_runs=1))
            problem = caught.value.problem()
            assert (problem["status"], problem["code"]) == (503, "key_limits_unavailable")
            assert "refused until it does" in problem["detail"] and caught.value.retry_after == 5
            await check(FREE)  # a key without limits goes through
        assert checks(limits, "requests", "unavailable") == checks(limits, "runs", "unavailable") == 1
        limits.leave_run(Access(name="limited", max_concurrent_runs=1))  # cannot write: kept for later
        await settled(limits)
        assert limits.unwritten == {"limited"}
    finally:
        await engine.dispose()
