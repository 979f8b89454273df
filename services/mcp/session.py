"""One configured MCP server: its session (started lazily, restarted with backoff, closed when idle), its
breaker, its tools and its status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from services.breaker import Breaker, State
from services.errors import MCPServerUnavailableError, MCPToolNotFoundError, MCPToolTimeoutError
from services.mcp.clock import CallClock
from services.mcp.config import MCPServerConfig, Transport, safe_url
from services.mcp.connection import Connection
from services.mcp.oauth import ServerAuth
from services.mcp.tools import ToolResult, VisibleTools, error_result, to_tool_result

logger = logging.getLogger(__name__)

Status = Literal["idle", "starting", "ready", "failed", "disabled", "needs_login"]

STOP_WAIT_S = 15.0
RECURSION_SKIPPED = "skipped: this entry is lmstudio-bridge itself (recursion guard)"
_NOT_FOUND_TEXT = re.compile(r"unknown tool|not found|no such tool|does not exist", re.IGNORECASE)


@dataclass(frozen=True)
class ServerStatus:
    """A secret-free view of one configured MCP server."""

    name: Annotated[str, Field(description="The server's name in mcp.json")]
    transport: Annotated[
        Transport, Field(description="stdio (a child), http (streamable), sse (legacy HTTP+SSE), unknown (disabled)")
    ]
    status: Annotated[Status, Field(description="Started on first use (or with warmup); needs_login: see OAuth")]
    tools: Annotated[int | None, Field(description="Number of tools once the server has started")]
    last_error: Annotated[str | None, Field(description="Why the server last failed to start or dropped")]
    env: Annotated[list[str], Field(description="Names of the environment variables set for it (never values)")]
    headers: Annotated[list[str], Field(description="Names of the HTTP headers sent to it (never values)")]
    command: Annotated[str | None, Field(description="The command of a stdio server")]
    url: Annotated[str | None, Field(description="The URL of an HTTP server, without credentials or query")]
    breaker: Annotated[State, Field(description="The state of the server's circuit breaker")] = "closed"


class Session:
    """One server's session: at most one current connection, started on demand (single-flight)."""

    def __init__(
        self,
        cfg: MCPServerConfig,
        breaker: Breaker,
        *,
        max_concurrency: int,
        start_timeout_s: float,
        backoff_s: float,
        backoff_max_s: float,
        progress_max_s: float = 0.0,
        auth: ServerAuth | None = None,
    ) -> None:
        self.cfg = cfg
        self.auth = auth  # OAuth (services/mcp/oauth.py): the server may wait for a person's login
        self.breaker = breaker
        self.spawn_count = 0
        self.owners: set[asyncio.Task[None]] = set()  # owner tasks still running, of any connection
        self._start_timeout_s = start_timeout_s
        self._progress_max_s = progress_max_s  # a call reporting progress may run this long (0: progress is not asked)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._conn: Connection | None = None
        self._listed: Connection | None = None  # the last connection that listed tools (status counts them)
        self._closed = False
        self._failed = False
        self._failures = 0
        self._next_start_at = 0.0
        self._last_error: str | None = RECURSION_SKIPPED if cfg.is_bridge else None
        self._in_flight = 0
        self._last_used = 0.0
        # the visible tools, kept while the tool list they came from lasts (it is replaced on change)
        self._visible: VisibleTools | None = None

    # --- state -------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """The session is up and usable."""
        return self._conn is not None and self._conn.live

    @property
    def state(self) -> Status:
        """Where the session is in its life."""
        if self.cfg.disabled:
            return "disabled"
        if self.auth is not None and self.auth.needs_login:
            return "needs_login"
        conn = self._conn
        if conn is not None:
            if conn.dead and not conn.stop:
                return "failed"
            if conn.is_ready and not conn.stop:
                return "ready"
            if conn.starting:
                return "starting"
        return "failed" if self._failed else "idle"

    def status(self) -> ServerStatus:
        """A secret-free view of the server."""
        cfg = self.cfg
        return ServerStatus(
            name=cfg.name,
            transport=cfg.transport,
            status=self.state,
            tools=len(self._tools(self._listed).specs) if self._listed is not None else None,
            last_error=(self.auth and self.auth.waiting) or self._last_error or cfg.unusable,
            env=sorted(cfg.env),
            headers=sorted(cfg.headers),
            command=cfg.command,
            url=safe_url(cfg.url),
            breaker=self.breaker.state,
        )

    # --- tools -------------------------------------------------------------------------

    async def list_tools(self, wait_budget_s: float) -> VisibleTools:
        """The tools the model may see (allowedTools/disabledTools applied); starts the server if needed."""
        conn = self._conn
        if conn is not None and conn.live:
            # a running session answers from its cached list: no call that could pass or fail, so it must not
            # count as a success (that would reset the breaker's count of failed tool calls before every run)
            self.breaker.check()
        else:
            conn = await self.breaker.call(lambda: self._ensure(wait_budget_s))
        self._last_used = asyncio.get_running_loop().time()
        return self._tools(conn)

    async def use(self, wait_budget_s: float) -> Connection:
        """A live connection for a request other than a tool call (resources, prompts); starts the server if needed."""
        conn = self._conn
        if conn is None or not conn.live:
            conn = await self.breaker.call(lambda: self._ensure(wait_budget_s))
        self._last_used = asyncio.get_running_loop().time()
        return conn

    def _tools(self, conn: Connection) -> VisibleTools:
        visible = self._visible
        if visible is None or visible.listed is not conn.tools:
            visible = self._visible = VisibleTools.of(self.cfg.name, conn.tools, self.cfg.tool_allowed)
        return visible

    def knows_tool(self, tool: str) -> bool:
        """True when the server's last tool list offers `tool`."""
        listed = self._listed
        return listed is not None and tool in self._tools(listed).by_name

    def _not_found(self, conn: Connection, tool: str) -> MCPToolNotFoundError:
        return MCPToolNotFoundError(self.cfg.name, tool, [spec.name for spec in self._tools(conn).specs])

    async def _vanished(self, conn: Connection, tool: str) -> bool:
        """Refresh the tool list; True when `tool` is no longer offered."""
        return await conn.relist(self._start_timeout_s) and tool not in {t.name for t in conn.tools}

    # --- calls -------------------------------------------------------------------------

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], timeout_s: float, meta: dict[str, Any] | None
    ) -> ToolResult:
        """Call one tool through the breaker; the tool's `bridge.tool_timeouts` entry, then the server's `timeout`
        from mcp.json win over `timeout_s`."""
        return await self.breaker.call(lambda: self._call_tool(tool, arguments, timeout_s, meta))

    async def _call_tool(
        self, tool: str, arguments: dict[str, Any], timeout_s: float, meta: dict[str, Any] | None
    ) -> ToolResult:
        cfg = self.cfg
        timeout = (cfg.tool_timeouts.get(tool) if cfg.tool_timeouts else None) or cfg.timeout_s or timeout_s
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        self._last_used = loop.time()
        try:
            conn = await self._ensure(timeout)
            if tool not in self._tools(conn).by_name:
                raise self._not_found(conn, tool)
            clock = CallClock(timeout, loop.time(), self._progress_max_s)
            try:
                if self._slots.locked():  # only a wait for a slot needs its own timer
                    async with asyncio.timeout(timeout):
                        await self._slots.acquire()
                else:
                    await self._slots.acquire()
            except TimeoutError:
                raise MCPToolTimeoutError(
                    f"Tool {tool!r} on MCP server {cfg.name!r} waited {timeout:g}s for a free slot",
                    timeout_s=timeout,
                    limit="timeout",
                ) from None
            try:
                return await self._call_once(conn, tool, arguments, clock, meta)
            finally:
                self._slots.release()
        finally:
            self._in_flight -= 1
            self._last_used = loop.time()

    async def _call_once(
        self, conn: Connection, tool: str, arguments: dict[str, Any], clock: CallClock, meta: dict[str, Any] | None
    ) -> ToolResult:
        from mcp import MCPError  # loaded with `conn`
        from mcp_types import INVALID_PARAMS

        try:
            result = await conn.call(tool, arguments, clock, meta)
        except MCPError as exc:
            if exc.code == INVALID_PARAMS and await self._vanished(conn, tool):
                raise self._not_found(conn, tool) from None
            return error_result(f"MCP error {exc.code}: {exc.message}")
        except RuntimeError as exc:  # invalid structured content, unexpected input-required result
            return error_result(f"Invalid result from tool {tool!r}: {exc}")
        out = to_tool_result(result, clock.timeout_s, clock.resets)
        if out.is_error and _NOT_FOUND_TEXT.search(out.text) and await self._vanished(conn, tool):
            raise self._not_found(conn, tool)
        return out

    # --- lifecycle ---------------------------------------------------------------------

    async def warm(self) -> None:
        """Start the session now; a failure is recorded in the status, not raised."""
        with contextlib.suppress(MCPServerUnavailableError):
            await self._ensure(self._start_timeout_s)

    def close(self) -> None:
        """Stop the session and refuse new ones; `owners` are the tasks to wait for."""
        self._closed = True
        if self._conn is not None:
            self._conn.request_stop()

    def stop_if_idle(self, now: float, idle_s: float) -> None:
        """Close a session that has not been used for `idle_s` (it starts again on demand)."""
        conn = self._conn
        if conn is not None and conn.live and self._in_flight == 0 and now - self._last_used >= idle_s:
            logger.info("MCP server %r idle for %.0fs: closing its session", self.cfg.name, idle_s)
            conn.request_stop()

    async def _ensure(self, wait_budget_s: float) -> Connection:
        """A ready connection: reuse it, join a start in progress, or start one (single-flight)."""
        while True:
            if self._closed:
                raise MCPServerUnavailableError(f"MCP server {self.cfg.name!r} is unavailable: the pool is closed")
            conn = self._conn
            if conn is not None:
                if conn.live:
                    return conn
                await self._settle(conn)
            elif not await self._waited_out_backoff(wait_budget_s):
                self._launch()
            # then look again: the state may have changed while we waited or launched

    async def _settle(self, conn: Connection) -> None:
        """Wait for a current connection that is not live: join its start, or let a winding-down owner finish."""
        if conn.starting:
            try:
                await asyncio.shield(conn.ready)
            except MCPServerUnavailableError as exc:
                raise MCPServerUnavailableError(exc.detail) from None
            return
        # The connection is winding down (died or idle-closed): let its owner finish.
        if conn.task is not None and not conn.task.done():
            await asyncio.wait({conn.task}, timeout=STOP_WAIT_S)
        if self._conn is conn:
            self._conn = None

    async def _waited_out_backoff(self, wait_budget_s: float) -> bool:
        """False when a start may begin now; True after sleeping out the restart backoff; raises when the
        backoff outlasts `wait_budget_s`."""
        delay = self._next_start_at - asyncio.get_running_loop().time()
        if delay <= 0:
            return False
        if delay > wait_budget_s:
            raise MCPServerUnavailableError(
                f"MCP server {self.cfg.name!r} is unavailable ({self._last_error or 'failed'}); "
                f"next restart attempt in {delay:.1f}s"
            )
        await asyncio.sleep(delay)
        return True

    def _launch(self) -> None:
        conn = Connection(self.cfg, self.auth)
        self._conn = conn
        task = asyncio.create_task(self._own(conn), name=f"mcp-session-{self.cfg.name}")
        conn.task = task
        self.owners.add(task)
        task.add_done_callback(self.owners.discard)

    async def _own(self, conn: Connection) -> None:
        reason: str | None = None
        try:
            reason = await conn.run(self._start_timeout_s, on_spawn=self._spawned, on_ready=lambda: self._up(conn))
        finally:
            self._finish(conn, reason)

    def _spawned(self) -> None:
        self.spawn_count += 1

    def _up(self, conn: Connection) -> None:
        self._failures = 0
        self._failed = False
        self._last_error = None
        self._listed = conn
        self._last_used = asyncio.get_running_loop().time()

    def _finish(self, conn: Connection, reason: str | None) -> None:
        was_ready = conn.is_ready
        conn.is_ready = False
        conn.session = None
        name = self.cfg.name
        if conn.stop:
            if self._conn is conn:
                self._failed = False
        else:
            if reason is None:
                reason = "connection closed"
            if was_ready:
                reason = "connection closed (the server exited or dropped the connection)"
            tail = conn.stderr.summary()
            if tail:
                reason = f"{reason}; stderr: {tail}"
            self._failed = True
            self._last_error = reason
            self._failures += 1
            delay = min(self._backoff_s * (2 ** max(self._failures - 1, 0)), self._backoff_max_s)
            self._next_start_at = asyncio.get_running_loop().time() + delay
            logger.warning("MCP server %r failed: %s", name, reason)
        if conn.starting:
            detail = (
                f"MCP server {name!r} could not start: {reason}"
                if not conn.stop
                else f"MCP server {name!r} was stopped while starting"
            )
            conn.ready.set_exception(MCPServerUnavailableError(detail))
        if self._conn is conn:
            self._conn = None
