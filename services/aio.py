"""Waiting with a time limit, the one way the gateway does it."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Whether `event` was set within `timeout_s`. Through `asyncio.timeout`, never `asyncio.wait_for`: on Python
    3.11 wait_for swallows a cancel that arrives just as the event is set, and a background task cancelled at
    a stop then runs on (the store's close waited for ever on its writer so)."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
