"""Running an agent run for an HTTP client: as JSON (cancelled if the client leaves) or as SSE."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event
from starlette.types import Receive, Scope, Send

from services.agent import Run
from services.errors import BridgeError

T = TypeVar("T")
log = logging.getLogger("lmstudio_bridge.stream")
KEEPALIVE_S = 15.0
EVENT_QUEUE_SIZE = 256  # bounded: a slow reader slows the run down instead of growing memory


def wants_stream(request: Request, stream_flag: bool | None) -> bool:
    return bool(stream_flag) or "text/event-stream" in request.headers.get("accept", "")


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was complete."""


CLIENT_CLOSED_REQUEST = 499  # nginx's status for "client closed the request"; nobody reads it


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it (and what it awaits)."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone and not _cancelling():
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


def _cancelling() -> bool:
    """True when the current task itself is being cancelled (not just the work it awaited)."""
    task = asyncio.current_task()
    return bool(task and task.cancelling())


def _sse(event: str, data: Any) -> bytes:
    return format_sse_event(event=event, data_str=json.dumps(data, default=str))


class RunStream(StreamingResponse):
    """SSE response of one run. The run works in its own task, fed to the client through a bounded
    queue; the client leaving cancels it, and the run slot is freed even if the body never starts."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(EVENT_QUEUE_SIZE)
        super().__init__(
            self._body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-ID": run.run_id},
        )

    async def _emit(self, event: str, data: dict[str, Any]) -> None:
        await self.queue.put(_sse(event, data))

    async def _work(self) -> None:
        try:
            result = await self.run.execute(self._emit)
            await self.queue.put(_sse("run.completed", result.to_dict()))
        except BridgeError as exc:
            await self.queue.put(_sse("run.failed", exc.problem()))
        except Exception:
            log.exception("run %s failed", self.run.run_id)
            await self.queue.put(_sse("run.failed", BridgeError("The run failed unexpectedly").problem()))
        finally:
            await self.queue.put(None)

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await asyncio.wait_for(self.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if chunk is None:
                return
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the run's task belongs to this request task, not to the response's cancel scope
        work = asyncio.ensure_future(self._work())
        try:
            # uvicorn notices a vanished client only on the next write; watch for it instead
            await cancel_on_disconnect(receive, super().__call__(scope, receive, send))
        except ClientDisconnected:
            log.info("client left; run %s cancelled", self.run.run_id)
        finally:
            if not work.done():
                work.cancel()
                await asyncio.wait([work])
            self.run.release()
