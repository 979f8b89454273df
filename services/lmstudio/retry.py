"""Retries of LM Studio calls: exponential backoff, full jitter, a cap, `Retry-After` and a deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from services.errors import LLMError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 2
    backoff_s: float = 0.25
    backoff_max_s: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        jitter = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))
        return max(jitter, retry_after or 0.0)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `call`, retrying errors marked retryable; never sleeps past `deadline` (monotonic)."""
    attempt = 0
    while True:
        try:
            return await call()
        except LLMError as exc:
            attempt += 1
            if not exc.retryable or attempt > policy.retries:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(wait)
