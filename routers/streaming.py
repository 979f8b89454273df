"""Running an agent run for an HTTP client: as JSON (cancelled if the client leaves) or as SSE."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from fastapi import Request
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event
from starlette.types import Receive, Scope, Send

from services.agent import Run, RunEvent, RunResult, result_data
from services.errors import BridgeError, LLMResponseError
from services.runs import StoredEvent

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
    """Await `work` in this task; if the client disconnects first, cancel it (and what it awaits). A watcher
    cancels this task, and that cancellation comes back as ClientDisconnected; a cancellation of this task
    from anywhere else stays one. (In this task, not one of its own: a task and two loop turns less per run.)"""
    this = asyncio.current_task()
    assert this is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                this.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        result = await work
    except asyncio.CancelledError:
        if gone and this.uncancel() == 0:  # the watcher's was the only cancellation
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()
    if gone:  # the work ended without taking the watcher's cancellation: it is withdrawn
        this.uncancel()
    return result


async def execute_for_client(request: Request, run: Run) -> RunResult | None:
    """Run to the end for a JSON answer; None when the client left (the run was cancelled)."""
    try:
        return await cancel_on_disconnect(request.receive, run.execute())
    except ClientDisconnected:
        return None
    finally:
        run.release()


def _sse(event: str, data: Any) -> bytes:
    return format_sse_event(event=event, data_str=json.dumps(data, default=str))


class GuardedStream(StreamingResponse):
    """A streamed response whose producer is cancelled when the client leaves, and whose
    `cleanup` always runs, even if the body was never started."""

    async def cleanup(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.start()
            # uvicorn notices a vanished client only on the next write; watch for it instead
            await cancel_on_disconnect(receive, super().__call__(scope, receive, send))
        except ClientDisconnected:
            log.info("client left during a stream")
        finally:
            await self.cleanup()


class QueuedStream(GuardedStream):
    """SSE fed by a producer task (owned by the request task, not by the response's cancel scope)
    through a bounded queue, with keep-alive comments while nothing comes."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.work: asyncio.Future[None] | None = None
        super().__init__(
            self._body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )

    def opening(self) -> bytes | None:
        return None

    async def produce(self) -> None:
        """Put the stream's frames on `self.queue`."""
        raise NotImplementedError

    async def _work(self) -> None:
        try:
            await self.produce()
        finally:
            await self.queue.put(None)

    async def _body(self) -> AsyncIterator[bytes]:
        first = self.opening()
        if first:
            yield first
        while True:
            try:
                chunk = self.queue.get_nowait()  # most frames are waiting already: no timer for them
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):  # not wait_for: no task per frame
                        chunk = await self.queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
            if chunk is None:
                return
            yield chunk

    async def start(self) -> None:
        self.work = asyncio.ensure_future(self._work())

    async def cleanup(self) -> None:
        if self.work is not None and not self.work.done():
            self.work.cancel()
            await asyncio.wait([self.work])


class RunStream(QueuedStream):
    """SSE of one run as it executes."""

    def __init__(self, run: Run, frames: RunFrames | None = None) -> None:
        self.run = run
        self.frames = frames or RunFrames()
        super().__init__({"X-Run-ID": run.run_id})

    def opening(self) -> bytes | None:
        return self.frames.opening(self.run)

    async def _emit(self, event: str, data: dict[str, Any]) -> None:
        frame = self.frames.event(event, data, self.run.event_text)
        if frame is not None:
            await self.queue.put(frame)

    async def produce(self) -> None:
        try:
            result = await self.run.execute(self._emit)
            await self.queue.put(self.frames.completed(result))
        except BridgeError as exc:
            await self.queue.put(self.frames.failed(exc.problem()))
        except Exception:
            log.exception("run %s failed", self.run.run_id)
            await self.queue.put(self.frames.failed(BridgeError("The run failed unexpectedly").problem()))

    async def cleanup(self) -> None:
        await super().cleanup()
        self.run.release()


class StoredEventStream(QueuedStream):
    """A stored run's events (`id:` = sequence number), replayed then followed live to the terminal one."""

    def __init__(self, run_id: str, events: AsyncIterator[StoredEvent]) -> None:
        self.events = events
        super().__init__({"X-Run-ID": run_id})

    async def produce(self) -> None:
        async for item in self.events:
            await self.queue.put(format_sse_event(event=item.event, data_str=item.data, id=str(item.seq)))


class RunFrames:
    """How a run's progress is written on the wire; by default the named events of /v1/autonomous:
    run.started, round.started, tool_call.started/completed, message, then run.completed | run.failed."""

    def opening(self, run: Run) -> bytes | None:
        return None

    def event(self, event: str, data: dict[str, Any], stored: Callable[[dict[str, Any]], str | None]) -> bytes | None:
        """The event's frame; `stored` gives the JSON text the run store keeps of it (serialised once, redacted
        as stored), else it is serialised here."""
        text = stored(data)
        return _sse(event, data) if text is None else format_sse_event(event=event, data_str=text)

    def completed(self, result: RunResult) -> bytes:
        return _sse(RunEvent.COMPLETED, result_data(result))

    def failed(self, problem: dict[str, Any]) -> bytes:
        return _sse(RunEvent.FAILED, problem)


class ProxyStream(GuardedStream):
    """LM Studio's streamed answer relayed byte for byte; the upstream response is always closed. An upstream that
    breaks off mid-stream ends it with `on_break(problem)` (an error chunk in the stream's own shape), not a cut."""

    def __init__(
        self,
        upstream: httpx.Response,
        body: AsyncIterator[bytes] | None = None,
        on_break: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> None:
        self.upstream = upstream
        super().__init__(
            _ended_cleanly(body if body is not None else upstream.aiter_bytes(), on_break),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def cleanup(self) -> None:
        await self.upstream.aclose()


async def _ended_cleanly(
    body: AsyncIterator[bytes], on_break: Callable[[dict[str, Any]], bytes] | None
) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("LM Studio broke off a streamed answer: %s", exc.__class__.__name__)
        if on_break is not None:
            yield on_break(
                LLMResponseError(f"LM Studio broke off the streamed answer ({exc.__class__.__name__})").problem()
            )
