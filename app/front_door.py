"""The MCP front door at `/mcp`, built on its first request: the MCP SDK (~25 MB) is loaded only by a
gateway that serves MCP clients.

The first request builds the MCP server (routers.mcp_front) and its streamable HTTP app under a lock, and
starts an owner task that runs the SDK's session manager: anyio cancel scopes must be exited by the task
that entered them, so the manager is never entered by a request's task (which ends with its request). The
lifespan stops the owner task on shutdown (`aclose`), before the gateway's services close.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import problem_response
from app.gateway import BridgeState
from app.settings import Settings
from routers.paths import MCP_PATH
from services.errors import ShuttingDownError

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = logging.getLogger("lmstudio_bridge.mcp")

STOP_WAIT_S = 15.0


class MCPFrontDoor:
    """The ASGI endpoint of `/mcp`: builds the MCP server on the first request and forwards every request
    to the SDK's streamable HTTP handler."""

    def __init__(self, settings: Settings, state: Callable[[], BridgeState]) -> None:
        self._settings = settings
        self._state = state  # the services the lifespan built (read by the tools at call time)
        self._lock = asyncio.Lock()
        self._handler: ASGIApp | None = None  # the SDK's handler while its session manager runs
        self._ready: asyncio.Future[ASGIApp] | None = None  # the current start (None: none yet, or it failed)
        self._owner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the MCP server has been built (a request reached `/mcp`)."""
        return self._owner is not None

    def route(self) -> Route:
        """The route at exactly `/mcp`, every method (the SDK answers those it does not serve)."""
        return Route(MCP_PATH, endpoint=self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._handler or await self._open()
        if handler is None:
            err = ShuttingDownError("The MCP front door is shut down")
            await problem_response(err, MCP_PATH)(scope, receive, send)
            return
        await handler(scope, receive, send)

    async def _open(self) -> ASGIApp | None:
        """The SDK's handler of `/mcp`, built and started once (None once the front door is closed)."""
        async with self._lock:
            if self._closed:
                return None
            if self._ready is None:
                self._ready = self._start()
            ready = self._ready
            try:
                # shielded: a request that stops waiting (client gone) leaves the start to the next one
                self._handler = await asyncio.shield(ready)
            except Exception:
                if self._ready is ready:  # the next request tries again, with a new server
                    self._ready = None
                raise
            return self._handler

    def _start(self) -> asyncio.Future[ASGIApp]:
        """Build the MCP server and start the owner task of its session manager; the future gets the
        handler once the manager runs."""
        from routers.mcp_front import build_mcp_server, http_endpoint  # imports the MCP SDK

        server = build_mcp_server(self._settings, self._state)
        handler = http_endpoint(server, self._settings)
        ready: asyncio.Future[ASGIApp] = asyncio.get_running_loop().create_future()
        # a fresh context: the owner task outlives this request and must not carry its request id or trace
        self._owner = asyncio.create_task(
            self._own(server.session_manager, handler, ready),
            name="mcp-front-door",
            context=contextvars.Context(),
        )
        return ready

    async def _own(
        self, manager: StreamableHTTPSessionManager, handler: ASGIApp, ready: asyncio.Future[ASGIApp]
    ) -> None:
        """The owner task: enters the session manager, serves until `aclose`, exits it (ending the sessions)."""
        try:
            async with manager.run():
                ready.set_result(handler)
                await self._stop.wait()
        except Exception as exc:
            if ready.done():
                log.exception("the MCP front door's session manager failed")
            else:
                ready.set_exception(exc)  # the waiting request fails with it
        finally:
            if not ready.done():  # cancelled before it ran
                ready.set_exception(RuntimeError("the MCP front door was stopped while starting"))
            self._handler = None  # it cannot serve without its session manager
            if self._ready is ready and not self._closed:  # ended on its own: the next request starts anew
                self._ready = None

    async def aclose(self) -> None:
        """Stop the owner task (ending every `/mcp` session); requests after this get a 503."""
        async with self._lock:
            self._closed = True
            self._handler = None
            owner = self._owner
        if owner is None:
            return
        self._stop.set()
        _, pending = await asyncio.wait({owner}, timeout=STOP_WAIT_S)
        if pending:
            owner.cancel()
            await asyncio.wait(pending, timeout=STOP_WAIT_S)
