"""Per-key limits (`requests_per_minute`, `max_concurrent_runs` of the keys file): what counts them.

`LocalKeyLimits` counts in this process (one gateway, or several on SQLite); `services/runs/key_limits.py`
counts in the shared PostgreSQL store, so that N gateway processes give a key its limit once, not N times.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from services.errors import KeyRateLimitedError


class Limited(Protocol):
    """What a limit needs of a key's access (`services.access.Access`)."""

    @property
    def name(self) -> str: ...

    @property
    def requests_per_minute(self) -> int | None: ...

    @property
    def max_concurrent_runs(self) -> int | None: ...


class KeyLimits(Protocol):
    """Counts each key's requests and runs in flight; raises KeyRateLimitedError (429) over a limit."""

    async def take_request(self, access: Limited) -> None:
        """One request of the key's `requests_per_minute`."""
        ...

    async def enter_run(self, access: Limited) -> None:
        """One more run of the key in flight (its `max_concurrent_runs`)."""
        ...

    def leave_run(self, access: Limited) -> None:
        """A run of the key has ended (never below zero)."""
        ...


def rate_limited(access: Limited, tokens: float) -> KeyRateLimitedError:
    """The 429 of a key whose bucket holds `tokens` (< 1): Retry-After is the wait for a whole token."""
    rate = access.requests_per_minute or 1
    wait = math.ceil((1.0 - tokens) * 60.0 / rate)
    return KeyRateLimitedError(
        f"The API key {access.name!r} is limited to {rate} requests a minute", retry_after=max(1, wait)
    )


def runs_limited(access: Limited, running: int) -> KeyRateLimitedError:
    return KeyRateLimitedError(
        f"The API key {access.name!r} may run {access.max_concurrent_runs} run(s) at once; {running} are in flight",
        retry_after=5,
    )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass
class LocalKeyLimits:
    """Per-key limits counted in this process: a token bucket per key, and its runs in flight."""

    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)

    def take(self, access: Limited, now: float | None = None) -> None:
        """One request of the key's `requests_per_minute` (a token bucket); 429 when it has none left."""
        rate = access.requests_per_minute
        if rate is None:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(access.name)
        if bucket is None:
            bucket = self._buckets[access.name] = _Bucket(float(rate), now)
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * rate / 60.0)
        bucket.at = now
        if bucket.tokens < 1.0:
            raise rate_limited(access, bucket.tokens)
        bucket.tokens -= 1.0

    def enter(self, access: Limited) -> None:
        """One more run of the key in flight; 429 beyond its `max_concurrent_runs`."""
        limit = access.max_concurrent_runs
        running = self._running.get(access.name, 0)
        if limit is not None and running >= limit:
            raise runs_limited(access, running)
        self._running[access.name] = running + 1

    async def take_request(self, access: Limited) -> None:
        self.take(access)

    async def enter_run(self, access: Limited) -> None:
        self.enter(access)

    def leave_run(self, access: Limited) -> None:
        self._running[access.name] = max(0, self._running.get(access.name, 0) - 1)
