"""Per-key limits counted in the shared PostgreSQL store, so that N gateway processes give a key its limit once.

`requests_per_minute`: one token bucket per key in `key_buckets`, refilled and taken in ONE statement (an
upsert whose update applies only when a whole token is there), by the database's clock. `max_concurrent_runs`:
each process's runs in flight per key in `key_runs` (one row per key and process); a run is admitted under a
transaction-level advisory lock on the key, when the rows of live processes (those holding a lease) sum to
less than the limit. This process's own row is always written from its count in memory, under the same lock;
a write that failed (a run's end while the store was away) is written again every `RESYNC_S`. Rows of a
process that stopped go when maintenance finds its lease gone (`maintenance.py`).

Keys without a limit never touch the store. A limited key whose check cannot reach the store (an error, or no
answer within `CHECK_TIMEOUT_S`) is refused with 503 `key_limits_unavailable`: fail closed, since counting
in one process would give the key N times its limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from services.errors import KeyLimitsUnavailableError, KeyRateLimitedError
from services.key_limits import Limited, rate_limited, runs_limited
from services.metrics import Metrics
from services.runs.tables import key_runs

log = logging.getLogger("lmstudio_bridge.access")

CHECK_TIMEOUT_S = 2.0  # a check the store does not answer within this long refuses the request
RESYNC_S = 5.0  # how often rows whose write failed are written again
POOL_SIZE = 4  # connections of the checks' own pool
KEY_LOCK = 0x6C6D7365  # the advisory lock class of per-key run counts (the key is the second int)

# The checks' statements, sent as prepared statements on a small asyncpg pool of their own: through SQLAlchemy a
# check cost about ten times the CPU (compiling, pool events) of the round trip itself (docs/performance.md).
_NOW = "extract(epoch from statement_timestamp())"  # the database's clock, the same all through a statement
_REFILLED = f"least($2::float8, key_buckets.tokens + ({_NOW} - key_buckets.at) * $2::float8 / 60.0)"
TAKE = (
    f"INSERT INTO key_buckets (key_name, tokens, at) VALUES ($1, $2::float8 - 1, {_NOW}) ON CONFLICT (key_name) "
    f"DO UPDATE SET tokens = {_REFILLED} - 1, at = {_NOW} WHERE {_REFILLED} >= 1 RETURNING tokens"
)
TOKENS = f"SELECT {_REFILLED} FROM key_buckets WHERE key_name = $1"
LOCK = "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))"
OTHERS = (
    "SELECT coalesce(sum(k.running), 0) FROM key_runs k JOIN instances i ON i.id = k.instance "
    "WHERE k.key_name = $1 AND k.instance <> $2"
)
WRITE = (
    "INSERT INTO key_runs (key_name, instance, running) VALUES ($1, $2, $3) "
    "ON CONFLICT (key_name, instance) DO UPDATE SET running = excluded.running"
)


class StoreKeyLimits:
    """`KeyLimits` counted in the store's PostgreSQL database; see the module docstring."""

    def __init__(self, engine: AsyncEngine, instance: str, metrics: Metrics) -> None:
        self.engine = engine
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self.instance = instance
        self.metrics = metrics
        self.running: dict[str, int] = {}  # this process's runs in flight per key
        self.unwritten: set[str] = set()  # keys whose row could not be written
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Remove rows an earlier process of this instance left, and start writing failed rows again."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(key_runs).where(key_runs.c.instance == self.instance))
        self._resync = asyncio.create_task(self._resync_forever())

    async def aclose(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
        await asyncio.gather(*self._tasks, *([self._resync] if self._resync else []), return_exceptions=True)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(delete(key_runs).where(key_runs.c.instance == self.instance))
        except Exception as exc:
            log.warning("per-key run counts of this instance not removed (%s); maintenance removes them", exc)
        if self.pool is not None:
            await self.pool.close()

    async def _connections(self) -> asyncpg.Pool:
        """The checks' pool, opened on first use (a store away at start-up is found at the first check)."""
        async with self._opening:
            if self.pool is None:
                self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=POOL_SIZE)
        return self.pool

    @asynccontextmanager
    async def _checking(self, limit: str) -> AsyncIterator[None]:
        """Time the check; a store that fails or does not answer becomes 503 key_limits_unavailable."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                yield
        except KeyRateLimitedError:
            self.metrics.key_limit_checks.labels(limit, "limited").inc()
            raise
        except Exception as exc:
            self.metrics.key_limit_checks.labels(limit, "unavailable").inc()
            log.warning("per-key limit check failed, request refused (%s)", exc or type(exc))
            raise KeyLimitsUnavailableError(
                "This API key's limits are counted in the run store shared by the gateway processes, which did "
                "not answer; requests of keys with limits are refused until it does",
                retry_after=5,
            ) from None
        finally:
            self.metrics.key_limit_duration.labels(limit).observe(time.perf_counter() - started)
        self.metrics.key_limit_checks.labels(limit, "allowed").inc()

    async def take_request(self, access: Limited) -> None:
        rate = access.requests_per_minute
        if rate is None:
            return
        async with self._checking("requests"):
            pool = await self._connections()
            async with pool.acquire() as conn:
                if await conn.fetchrow(TAKE, access.name, float(rate)) is not None:
                    return
                tokens = await conn.fetchval(TOKENS, access.name, float(rate))
            raise rate_limited(access, float(tokens or 0.0))

    async def enter_run(self, access: Limited) -> None:
        limit = access.max_concurrent_runs
        if limit is None:
            return
        name = access.name
        async with self._checking("runs"):
            pool = await self._connections()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(LOCK, KEY_LOCK, name)
                others = int(await conn.fetchval(OTHERS, name, self.instance) or 0)
                mine = self.running.get(name, 0)
                if others + mine >= limit:
                    raise runs_limited(access, others + mine)
                self.running[name] = mine + 1
                try:
                    await conn.execute(WRITE, name, self.instance, mine + 1)
                except BaseException:
                    self.running[name] -= 1
                    raise

    def leave_run(self, access: Limited) -> None:
        if access.max_concurrent_runs is None:
            return
        name = access.name
        self.running[name] = max(0, self.running.get(name, 0) - 1)
        task = asyncio.create_task(self._write_now(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_now(self, name: str) -> None:
        """This process's row for the key, from its count in memory (under the key's lock)."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                pool = await self._connections()
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(LOCK, KEY_LOCK, name)
                    await conn.execute(WRITE, name, self.instance, self.running.get(name, 0))
            self.unwritten.discard(name)
        except Exception as exc:
            if name not in self.unwritten:
                log.warning("per-key run count of %r not written (%s); written again in %g s", name, exc, RESYNC_S)
            self.unwritten.add(name)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            for name in list(self.unwritten):
                await self._write_now(name)
