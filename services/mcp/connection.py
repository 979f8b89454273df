"""One connection to an MCP server: a start of its session, from launch until its owner task ends.

The owner task enters and exits the transport and the client session (anyio cancel scopes require one
task); callers use the client session from their own tasks, since MCP multiplexes concurrent requests.

The MCP SDK is imported by the functions that need it (a connection's start, its calls), never at module
level: the gateway starts without it and loads it with the first server session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import anyio

from services.errors import MCPServerUnavailableError, MCPToolTimeoutError
from services.mcp.clock import CallClock
from services.mcp.config import MCPServerConfig
from services.mcp.oauth import ServerAuth
from services.mcp.transport import StderrTail, WatchedReadStream, describe_failure, list_all_tools, open_transport

if TYPE_CHECKING:
    import mcp_types as mtypes
    from mcp import ClientSession

logger = logging.getLogger(__name__)

_BACKSTOP_S = 5.0  # the SDK's own call timeout sends notifications/cancelled; ours only catches a stuck SDK


class LoginNeeded(MCPServerUnavailableError):
    """A remote server refused the gateway's OAuth token and only a person's login helps: a state of the server
    (`needs_login`), not a failure that counts toward its breaker."""


class CutByDeath(MCPServerUnavailableError):
    """A call cut by a server death that the breaker already counted: one crash is one failure, however
    many calls were in flight (else a single crash under load opens the breaker although a restart fixes it)."""


def counts_against_server(exc: BaseException) -> bool:
    """Whether a failed call counts towards opening the server's breaker."""
    return isinstance(exc, MCPServerUnavailableError | MCPToolTimeoutError) and not isinstance(
        exc, CutByDeath | LoginNeeded
    )


class Connection:
    """One start of a server's session, with its owner task, tool list and stderr tail."""

    def __init__(self, cfg: MCPServerConfig, auth: ServerAuth | None = None) -> None:
        self.cfg = cfg
        self.auth = auth  # a remote server's OAuth (its tokens and login state)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.session: ClientSession | None = None
        self.tools: list[mtypes.Tool] = []
        self.resources: list[Any] | None = None  # ResourceInfo, listed on first use (services/mcp/resources.py)
        self.is_ready = False
        self.dead = False
        self.stop = False
        self.task: asyncio.Task[None] | None = None
        self.stderr = StderrTail()
        self._death_counted = False  # a call cut by this connection's death has been counted by the breaker
        self._refresh = False
        self._wake = asyncio.Event()
        self._scope: anyio.CancelScope | None = None

    @property
    def live(self) -> bool:
        """Up and usable."""
        return self.is_ready and not self.dead and not self.stop

    @property
    def starting(self) -> bool:
        return not self.ready.done()

    def request_stop(self) -> None:
        """Ask the owner task to close the session (a start in progress is cancelled)."""
        self.stop = True
        self._wake.set()
        if not self.is_ready and self._scope is not None:
            self._scope.cancel()

    def mark_dead(self) -> None:
        if not self.dead:
            self.dead = True
            self._wake.set()

    def _cut(self, detail: str) -> MCPServerUnavailableError:
        """The error for a call cut by this connection's death (only the first one counts for the breaker)."""
        if self._death_counted:
            return CutByDeath(detail)
        self._death_counted = True
        return MCPServerUnavailableError(detail)

    # --- the owner task ------------------------------------------------------------------

    async def run(
        self, start_timeout_s: float, *, on_spawn: Callable[[], None], on_ready: Callable[[], None]
    ) -> str | None:
        """The owner task's body: enter transport + session, initialize, list tools, serve until stopped or
        dead. Returns why the connection failed (None when it was stopped)."""
        from mcp import ClientSession  # the SDK loads with the first connection

        cfg = self.cfg
        scope = anyio.CancelScope(deadline=anyio.current_time() + start_timeout_s)
        self._scope = scope
        try:
            with scope:
                async with contextlib.AsyncExitStack() as stack:
                    tg = await stack.enter_async_context(anyio.create_task_group())
                    stack.callback(tg.cancel_scope.cancel)
                    auth = None
                    if self.auth is not None:  # OAuth: the SDK's client, loaded like the SDK with the first start
                        from services.mcp.oauth_provider import provider_of

                        auth = provider_of(self.auth)
                    read, write = await open_transport(cfg, stack, tg, self.stderr, auth)
                    if cfg.transport == "stdio":
                        on_spawn()
                    watched = WatchedReadStream(read, self.mark_dead)
                    session = await stack.enter_async_context(
                        ClientSession(watched, write, message_handler=self._on_message)
                    )
                    await session.initialize()
                    self.tools = await list_all_tools(session)
                    scope.deadline = math.inf
                    self.session = session
                    self.is_ready = True
                    on_ready()
                    self.ready.set_result(None)
                    await self._serve(session, start_timeout_s)
            if scope.cancelled_caught and not self.is_ready and not self.stop:
                return f"no answer to initialize within {start_timeout_s:g}s"
        except Exception as exc:
            if self.stop:
                return None
            if self.dead and self.is_ready:
                return "connection closed"
            if self.auth is not None and self.auth.problem:  # no token, or the server refused it
                return self.auth.problem
            logger.debug("MCP server %r failed", cfg.name, exc_info=True)
            return describe_failure(exc, cfg)
        return None

    async def _on_message(self, message: Any) -> None:
        import mcp_types as mtypes

        if isinstance(message, mtypes.ToolListChangedNotification):
            self._refresh = True  # re-listed by the owner task, never inside the handler
            self._wake.set()
        elif isinstance(message, mtypes.ResourceListChangedNotification):
            self.resources = None  # listed again on next use
        elif isinstance(message, Exception):
            logger.debug("MCP transport reported: %r", message)

    async def _serve(self, session: ClientSession, relist_timeout_s: float) -> None:
        from mcp import MCPError

        while not (self.stop or self.dead):
            await self._wake.wait()
            self._wake.clear()
            if self._refresh and not (self.stop or self.dead):
                self._refresh = False
                try:
                    with anyio.fail_after(relist_timeout_s):
                        self.tools = await list_all_tools(session)
                except (MCPError, TimeoutError) as exc:
                    logger.warning("MCP server %r: re-listing tools failed: %s", self.cfg.name, exc)

    # --- used by callers ---------------------------------------------------------------

    async def relist(self, timeout_s: float) -> bool:
        """Fetch the tool list again; False when that failed."""
        from mcp import MCPError

        session = self.session
        if session is None:
            return False
        try:
            with anyio.fail_after(timeout_s):
                self.tools = await list_all_tools(session)
        except (MCPError, TimeoutError):
            return False
        return True

    async def call(
        self, tool: str, arguments: dict[str, Any], clock: CallClock, meta: dict[str, Any] | None
    ) -> mtypes.CallToolResult:
        """Call a tool. Timeouts and a dead connection become domain errors; other MCP errors propagate."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        name = self.cfg.name
        session = self.session
        if session is None or self.dead:
            raise self._cut(f"MCP server {name!r} closed the connection")
        now = asyncio.get_running_loop().time()
        request_meta = cast("mtypes.RequestParamsMeta", meta) if meta else None
        try:
            if not clock.tracks_progress:  # the SDK's clock is the timeout; ours only catches a stuck SDK
                remaining = max(clock.deadline - now, 0.001)
                async with asyncio.timeout(remaining + _BACKSTOP_S):
                    return await session.call_tool(tool, arguments, read_timeout_seconds=remaining, meta=request_meta)
            # ours is the timeout, moved by progress; the SDK's is the hard maximum's backstop
            async with asyncio.timeout_at(clock.deadline) as timer:
                clock.watch(timer)
                try:
                    return await session.call_tool(
                        tool,
                        arguments,
                        read_timeout_seconds=max(clock.hard_deadline - now, 0.001) + _BACKSTOP_S,
                        progress_callback=clock.on_progress,
                        meta=request_meta,
                    )
                finally:
                    clock.unwatch()
        except TimeoutError:
            raise clock.timed_out(name, tool) from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise clock.timed_out(name, tool) from None
            if self.auth is not None and self.auth.needs_login:  # the token was refused: a new session after login
                self.mark_dead()
                raise LoginNeeded(self.auth.problem or f"MCP server {name!r} needs a login") from None
            if exc.code != CONNECTION_CLOSED and not self.dead:
                raise
            if self.stop:
                raise MCPServerUnavailableError(
                    f"MCP server {name!r} was shut down during the call to {tool!r}"
                ) from None
            self.mark_dead()
            tail = self.stderr.summary()
            raise self._cut(
                f"MCP server {name!r} closed the connection during the call to {tool!r}"
                + (f" (stderr: {tail})" if tail else "")
            ) from None
