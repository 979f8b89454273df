"""`cancel_on_disconnect` (routers/streaming.py): the work runs in the request's own task, which a watcher
cancels when the client leaves; that cancellation, and only that one, becomes ClientDisconnected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routers.streaming import ClientDisconnected, cancel_on_disconnect


class Client:
    """An ASGI `receive` that says `http.disconnect` once told to leave."""

    def __init__(self) -> None:
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}


async def turn() -> None:
    """One pass of the event loop: a future another callback completes."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_work_that_ends_gives_its_result() -> None:
    async def work() -> str:
        return "done"

    assert await cancel_on_disconnect(Client().receive, work()) == "done"


async def test_a_client_that_leaves_cancels_the_work_and_the_task_is_left_uncancelled() -> None:
    client, started, cancelled = Client(), asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def request() -> None:
        with pytest.raises(ClientDisconnected):
            await cancel_on_disconnect(client.receive, work())
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await turn()  # the task goes on: no cancellation is left pending for its next wait

    handler = asyncio.ensure_future(request())
    await started.wait()
    client.left.set()
    await handler
    assert cancelled.is_set()


async def test_work_that_swallows_the_cancellation_gives_its_result_and_withdraws_it() -> None:
    client, started = Client(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "cleaned up"
        return "never"

    async def request() -> str:
        result = await cancel_on_disconnect(client.receive, work())
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return result

    handler = asyncio.ensure_future(request())
    await started.wait()
    client.left.set()
    assert await handler == "cleaned up"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    handler = asyncio.ensure_future(cancel_on_disconnect(Client().receive, work()))
    await started.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
