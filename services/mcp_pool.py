"""MCP session pool: one lazily started, long-lived session per configured MCP server.

Each session is entered and exited by ONE owner task (anyio cancel scopes require it); callers
use the session directly from their own tasks, since MCP multiplexes concurrent requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, cast

import anyio
import anyio.abc
import httpx2
import mcp_types as mtypes
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, REQUEST_TIMEOUT
from opentelemetry.trace import SpanKind

from services.breaker import Breaker
from services.errors import (
    MCPServerNotFoundError,
    MCPServerUnavailableError,
    MCPToolNotFoundError,
    MCPToolTimeoutError,
)
from services.mcp_config import MCPServerConfig, safe_url
from services.metrics import Metrics
from services.tool_names import ToolNameMap, model_tool_name
from services.tracing import clip, tracer

logger = logging.getLogger(__name__)

Status = Literal["idle", "starting", "ready", "failed", "disabled"]

DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_IDLE_S = 600.0
DEFAULT_MAX_CONCURRENCY = 16
STDERR_TAIL_LINES = 20
STOP_WAIT_S = 15.0
_MAX_TOOL_PAGES = 100
RECURSION_SKIPPED = "skipped: this entry is lmstudio-bridge itself (recursion guard)"
_NOT_FOUND_TEXT = re.compile(r"unknown tool|not found|no such tool|does not exist", re.IGNORECASE)


@dataclass(frozen=True)
class ToolSpec:
    """One tool of one server, with the name the model sees."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    model_name: str


@dataclass(frozen=True)
class ToolResult:
    """The outcome of a tool call; `is_error` is the tool's own error flag."""

    content: list[dict[str, Any]]
    text: str
    structured_content: dict[str, Any] | None
    is_error: bool


@dataclass(frozen=True)
class ServerStatus:
    """A secret-free view of one configured server."""

    name: str
    transport: str
    status: Status
    tools: int | None
    last_error: str | None
    env: list[str]
    headers: list[str]
    command: str | None
    url: str | None
    breaker: str = "closed"


@dataclass
class ToolCatalog:
    """Tools of several servers with collision-safe model names."""

    tools: list[ToolSpec]
    _by_name: dict[str, ToolSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {t.model_name: t for t in self.tools}

    def resolve(self, model_name: str) -> ToolSpec | None:
        """The tool a model-facing name refers to, or None."""
        return self._by_name.get(model_name)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function tools."""
        return [
            {
                "type": "function",
                "function": {"name": t.model_name, "description": t.description, "parameters": t.input_schema},
            }
            for t in self.tools
        ]


# --- internals ---------------------------------------------------------------------------


class _WatchedReadStream:
    """Wraps a transport's read stream and reports when it ends (the connection died)."""

    def __init__(self, inner: Any, on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close

    def __getattr__(self, name: str) -> Any:  # `last_context` and friends
        return getattr(self._inner, name)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return cast("SessionMessage | Exception", await self._inner.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_close()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _Conn:
    """One session generation of a server, owned by one task."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.session: ClientSession | None = None
        self.tools: list[mtypes.Tool] = []
        self.is_ready = False
        self.dead = False
        self.death_counted = False  # a call cut by this session's death has been counted by the breaker
        self.stop = False
        self.refresh = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = b""

    def absorb_stderr(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.stderr_tail.append(text[:500])

    def stderr_summary(self) -> str:
        if self._partial:
            self.absorb_stderr(b"\n")
        return " | ".join(list(self.stderr_tail)[-3:])


class _Server:
    def __init__(self, cfg: MCPServerConfig, max_concurrency: int, breaker: Breaker) -> None:
        self.cfg = cfg
        self.breaker = breaker
        self.conn: _Conn | None = None
        self.failed = False
        self.last_error: str | None = RECURSION_SKIPPED if cfg.is_bridge else None
        self.tool_count: int | None = None
        self.sem = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.last_used = 0.0
        self.failures = 0
        self.next_start_at = 0.0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def _describe_failure(exc: BaseException, cfg: MCPServerConfig) -> str:
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    for leaf in leaves:
        if isinstance(leaf, FileNotFoundError):
            return f"command {cfg.command!r} not found"
        if isinstance(leaf, PermissionError):
            return f"command {cfg.command!r} is not executable"
    for leaf in leaves:
        if isinstance(leaf, OSError) and not isinstance(leaf, ConnectionError):
            return f"cannot run {cfg.command!r}: {leaf.strerror or leaf}"
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            if leaf.code == CONNECTION_CLOSED:
                return "the server closed the connection before initialization finished (did it exit?)"
            return f"MCP error {leaf.code}: {leaf.message}"
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPError):
            return f"{type(leaf).__name__}: {leaf}"
    leaf = leaves[0]
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


async def _list_all_tools(session: ClientSession) -> list[mtypes.Tool]:
    tools: list[mtypes.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_TOOL_PAGES):
        params = mtypes.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


def _summarise_block(block: Any) -> str:
    if isinstance(block, mtypes.TextContent):
        return block.text
    if isinstance(block, mtypes.ImageContent | mtypes.AudioContent):
        return f"[{block.type} {block.mime_type}]"
    if isinstance(block, mtypes.ResourceLink):
        return f"[resource {block.uri}]"
    if isinstance(block, mtypes.EmbeddedResource):
        res = block.resource
        if isinstance(res, mtypes.TextResourceContents):
            return res.text
        return f"[resource {res.uri} {res.mime_type or 'binary'}]"
    return f"[{getattr(block, 'type', 'content')}]"


def to_tool_result(result: mtypes.CallToolResult) -> ToolResult:
    """Convert the SDK's result into a plain ToolResult."""
    content = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]
    text = "\n".join(_summarise_block(b) for b in result.content)
    structured = result.structured_content if isinstance(result.structured_content, dict) else None
    return ToolResult(content=content, text=text, structured_content=structured, is_error=bool(result.is_error))


class _CutByDeath(MCPServerUnavailableError):
    """A call cut by a server death that the breaker already counted: one crash is one failure, however
    many calls were in flight (else a single crash under load opens the breaker although a restart fixes it)."""


def _death_error(conn: _Conn, detail: str) -> MCPServerUnavailableError:
    if conn.death_counted:
        return _CutByDeath(detail)
    conn.death_counted = True
    return MCPServerUnavailableError(detail)


def _error_result(text: str) -> ToolResult:
    return ToolResult(content=[{"type": "text", "text": text}], text=text, structured_content=None, is_error=True)


# --- the pool ----------------------------------------------------------------------------


class MCPPool:
    """Lazily started MCP sessions, one per server, with restart, timeouts and idle close."""

    def __init__(
        self,
        servers: dict[str, MCPServerConfig],
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        idle_s: float = DEFAULT_IDLE_S,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        restart_backoff_s: float = 1.0,
        restart_backoff_max_s: float = 30.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        metrics: Metrics | None = None,
        capture_content: bool = False,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.capture_content = capture_content

        def breaker(name: str) -> Breaker:
            return Breaker(
                f"MCP server {name!r}",
                failures=breaker_failures,
                reset_s=breaker_reset_s,
                counts=lambda exc: (
                    isinstance(exc, MCPServerUnavailableError | MCPToolTimeoutError)
                    and not isinstance(exc, _CutByDeath)
                ),
                unavailable=lambda detail, wait: MCPServerUnavailableError(detail, retry_after=wait),
            )

        self._servers = {name: _Server(cfg, max_concurrency, breaker(name)) for name, cfg in servers.items()}
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._idle_s = idle_s
        self._backoff_s = restart_backoff_s
        self._backoff_max_s = restart_backoff_max_s
        self._reaper: asyncio.Task[None] | None = None
        self._owners: set[asyncio.Task[None]] = set()
        self._closed = False
        self.spawn_count = 0
        # tool lists as specs, and catalogs of server sets, kept while the tool lists they came from last
        self._spec_cache: dict[str, tuple[list[mtypes.Tool], list[ToolSpec]]] = {}
        self._catalog_cache: dict[tuple[str, ...], tuple[list[list[ToolSpec]], ToolCatalog]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, warmup: bool = False) -> None:
        """Launch the idle reaper; with `warmup`, start every enabled server (failures are recorded)."""
        if self._reaper is None and self._idle_s > 0 and math.isfinite(self._idle_s):
            self._reaper = asyncio.create_task(self._reap_loop(), name="mcp-pool-reaper")
        if warmup:
            await asyncio.gather(*(self._warm(srv) for srv in self._servers.values() if not srv.cfg.disabled))

    async def _warm(self, srv: _Server) -> None:
        with contextlib.suppress(MCPServerUnavailableError):
            await self._ensure(srv, self._start_timeout_s)

    async def aclose(self) -> None:
        """Close every session and wait for the server processes to end."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for srv in self._servers.values():
            if srv.conn is not None:
                self._request_stop(srv.conn)
        owners = set(self._owners)
        if owners:
            _, pending = await asyncio.wait(owners, timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_WAIT_S)

    # --- queries -----------------------------------------------------------------------

    def names(self) -> list[str]:
        """Enabled server names, in config order."""
        return [name for name, srv in self._servers.items() if not srv.cfg.disabled]

    def _state(self, srv: _Server) -> Status:
        if srv.cfg.disabled:
            return "disabled"
        conn = srv.conn
        if conn is not None:
            if conn.dead and not conn.stop:
                return "failed"
            if conn.is_ready and not conn.stop:
                return "ready"
            if not conn.ready.done():
                return "starting"
        return "failed" if srv.failed else "idle"

    def status(self) -> list[ServerStatus]:
        """Status of every configured server (secret-free)."""
        out: list[ServerStatus] = []
        for name, srv in self._servers.items():
            cfg = srv.cfg
            out.append(
                ServerStatus(
                    name=name,
                    transport=cfg.transport,
                    status=self._state(srv),
                    tools=srv.tool_count,
                    last_error=srv.last_error,
                    env=sorted(cfg.env),
                    headers=sorted(cfg.headers),
                    command=cfg.command,
                    url=safe_url(cfg.url),
                    breaker=srv.breaker.state,
                )
            )
        return out

    def live_sessions(self) -> int:
        """Number of sessions that are up and usable."""
        return sum(
            1
            for srv in self._servers.values()
            if srv.conn is not None and srv.conn.is_ready and not srv.conn.dead and not srv.conn.stop
        )

    def _get(self, name: str) -> _Server:
        srv = self._servers.get(name)
        if srv is None:
            raise MCPServerNotFoundError(name, self.names())
        if srv.cfg.disabled:
            why = RECURSION_SKIPPED if srv.cfg.is_bridge else "disabled in mcp.json"
            raise MCPServerUnavailableError(f"MCP server {name!r} is {why}")
        return srv

    def _visible(self, srv: _Server, conn: _Conn) -> list[mtypes.Tool]:
        return [t for t in conn.tools if srv.cfg.tool_allowed(t.name)]

    def _spec(self, server: str, tool: mtypes.Tool) -> ToolSpec:
        return ToolSpec(
            server=server,
            name=tool.name,
            description=tool.description or tool.title or "",
            input_schema=tool.input_schema,  # shared, not copied: compiled validators are cached by identity
            model_name=model_tool_name(server, tool.name),
        )

    async def list_tools(self, server: str) -> list[ToolSpec]:
        """The server's tools (filtered by allowedTools/disabledTools); starts it if needed."""
        srv = self._get(server)
        conn = srv.conn
        if conn is not None and conn.is_ready and not (conn.dead or conn.stop):
            # a running session answers from its cached list: no call that could pass or fail, so it must not
            # count as a success (that would reset the breaker's count of failed tool calls before every run)
            srv.breaker.check()
        else:
            conn = await srv.breaker.call(lambda: self._ensure(srv, self._call_timeout_s))
        srv.last_used = asyncio.get_running_loop().time()
        return self._specs(srv, conn)

    def _specs(self, srv: _Server, conn: _Conn) -> list[ToolSpec]:
        """The visible tools as specs, built once per tool list (the list is replaced when it changes)."""
        cached = self._spec_cache.get(srv.cfg.name)
        if cached is None or cached[0] is not conn.tools:
            cached = (conn.tools, [self._spec(srv.cfg.name, t) for t in self._visible(srv, conn)])
            self._spec_cache[srv.cfg.name] = cached
        return cached[1]

    async def catalog(self, servers: list[str]) -> ToolCatalog:
        """Tools of these servers (started concurrently) with collision-safe model names; the same
        catalog object while none of the servers' tool lists changes."""
        for name in servers:
            self._get(name)
        unique = tuple(dict.fromkeys(servers))
        if len(unique) == 1:
            lists = [await self.list_tools(unique[0])]
        else:
            results = await asyncio.gather(*(self.list_tools(n) for n in unique), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            lists = cast("list[list[ToolSpec]]", results)
        cached = self._catalog_cache.get(unique)
        if cached is not None and all(a is b for a, b in zip(cached[0], lists, strict=True)):
            return cached[1]
        specs = [spec for listed in lists for spec in listed]
        names = ToolNameMap((s.server, s.name) for s in specs)
        catalog = ToolCatalog([dataclasses.replace(s, model_name=names.name_for(s.server, s.name)) for s in specs])
        self._catalog_cache[unique] = (lists, catalog)
        return catalog

    # --- calls -------------------------------------------------------------------------

    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ToolResult:
        """Call one tool. Tool-reported errors come back as `is_error=True`, not as exceptions.

        Traced as `tools/call <server>__<tool>`; the SDK adds the trace context to the request's `_meta`.
        """
        srv = self._get(server)
        name = model_tool_name(server, tool)
        attributes = {"mcp.server": server, "gen_ai.tool.name": tool, "gen_ai.operation.name": "execute_tool"}
        started, outcome = time.perf_counter(), "error"
        with tracer.start_as_current_span(f"tools/call {name}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            if self.capture_content:
                span.set_attribute("bridge.tool.arguments", clip(json.dumps(arguments, default=str)))
            try:
                result = await srv.breaker.call(lambda: self._call_tool(srv, tool, arguments, timeout_s, meta))
                outcome = "tool_error" if result.is_error else "ok"
                if self.capture_content:
                    span.set_attribute("bridge.tool.output", clip(result.text))
                return result
            except MCPToolTimeoutError:
                outcome = "timeout"
                raise
            except MCPServerUnavailableError:
                outcome = "unavailable"
                raise
            except MCPToolNotFoundError:
                outcome = "not_found"
                raise
            finally:
                span.set_attribute("bridge.tool.outcome", outcome)
                span.set_attribute("bridge.tool.is_error", outcome != "ok")
                self.metrics.tool_calls.labels(server, tool, outcome).inc()
                self.metrics.tool_duration.labels(server, tool).observe(time.perf_counter() - started)

    async def _call_tool(
        self, srv: _Server, tool: str, arguments: dict[str, Any], timeout_s: float | None, meta: dict[str, Any] | None
    ) -> ToolResult:
        server = srv.cfg.name
        timeout = srv.cfg.timeout_s or timeout_s or self._call_timeout_s
        loop = asyncio.get_running_loop()
        srv.in_flight += 1
        srv.last_used = loop.time()
        try:
            conn = await self._ensure(srv, timeout)
            if not any(spec.name == tool for spec in self._specs(srv, conn)):
                raise MCPToolNotFoundError(server, tool, [spec.name for spec in self._specs(srv, conn)])
            deadline = loop.time() + timeout
            try:
                if srv.sem.locked():  # only a wait for a slot needs its own timer
                    async with asyncio.timeout(timeout):
                        await srv.sem.acquire()
                else:
                    await srv.sem.acquire()
            except TimeoutError:
                raise MCPToolTimeoutError(
                    f"Tool {tool!r} on MCP server {server!r} waited {timeout:g}s for a free slot"
                ) from None
            try:
                return await self._call_once(srv, conn, tool, arguments, deadline, timeout, meta)
            finally:
                srv.sem.release()
        finally:
            srv.in_flight -= 1
            srv.last_used = loop.time()

    async def _call_once(
        self,
        srv: _Server,
        conn: _Conn,
        tool: str,
        arguments: dict[str, Any],
        deadline: float,
        budget_s: float,
        meta: dict[str, Any] | None,
    ) -> ToolResult:
        name = srv.cfg.name
        session = conn.session
        if session is None or conn.dead:
            raise _death_error(conn, f"MCP server {name!r} closed the connection")
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
        timed_out = MCPToolTimeoutError(f"Tool {tool!r} on MCP server {name!r} did not answer within {budget_s:g}s")
        try:
            # The SDK's own timeout sends notifications/cancelled; the outer one is a backstop.
            async with asyncio.timeout(remaining + 5.0):
                result = await session.call_tool(
                    tool,
                    arguments,
                    read_timeout_seconds=remaining,
                    meta=cast("mtypes.RequestParamsMeta", meta) if meta else None,
                )
        except TimeoutError:
            raise timed_out from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise timed_out from None
            if exc.code == CONNECTION_CLOSED or conn.dead:
                if conn.stop:
                    raise MCPServerUnavailableError(
                        f"MCP server {name!r} was shut down during the call to {tool!r}"
                    ) from None
                self._mark_dead(conn)
                tail = conn.stderr_summary()
                raise _death_error(
                    conn,
                    f"MCP server {name!r} closed the connection during the call to {tool!r}"
                    + (f" (stderr: {tail})" if tail else ""),
                ) from None
            if exc.code == INVALID_PARAMS and await self._tool_vanished(srv, conn, tool):
                raise MCPToolNotFoundError(name, tool, [t.name for t in self._visible(srv, conn)]) from None
            return _error_result(f"MCP error {exc.code}: {exc.message}")
        except RuntimeError as exc:  # invalid structured content, unexpected input-required result
            return _error_result(f"Invalid result from tool {tool!r}: {exc}")
        out = to_tool_result(result)
        if out.is_error and _NOT_FOUND_TEXT.search(out.text) and await self._tool_vanished(srv, conn, tool):
            raise MCPToolNotFoundError(name, tool, [t.name for t in self._visible(srv, conn)])
        return out

    async def _tool_vanished(self, srv: _Server, conn: _Conn, tool: str) -> bool:
        """Refresh the tool list; True when `tool` is no longer offered."""
        session = conn.session
        if session is None:
            return False
        try:
            with anyio.fail_after(self._start_timeout_s):
                conn.tools = await _list_all_tools(session)
        except (MCPError, TimeoutError):
            return False
        srv.tool_count = len(self._visible(srv, conn))
        return tool not in {t.name for t in conn.tools}

    # --- session lifecycle ---------------------------------------------------------------

    def _backoff_delay(self, failures: int) -> float:
        return float(min(self._backoff_s * (2 ** max(failures - 1, 0)), self._backoff_max_s))

    async def _ensure(self, srv: _Server, wait_budget_s: float) -> _Conn:
        """A ready session for `srv`: reuse it, join a start in progress, or start one (single-flight)."""
        loop = asyncio.get_running_loop()
        name = srv.cfg.name
        while True:
            if self._closed:
                raise MCPServerUnavailableError(f"MCP server {name!r} is unavailable: the pool is closed")
            conn = srv.conn
            if conn is not None:
                if conn.is_ready and not conn.dead and not conn.stop:
                    return conn
                if not conn.ready.done():
                    try:
                        await asyncio.shield(conn.ready)
                    except MCPServerUnavailableError as exc:
                        raise MCPServerUnavailableError(exc.detail) from None
                    continue
                # The session is winding down (died or idle-closed): let its owner finish.
                if conn.task is not None and not conn.task.done():
                    await asyncio.wait({conn.task}, timeout=STOP_WAIT_S)
                if srv.conn is conn:
                    srv.conn = None
                continue
            delay = srv.next_start_at - loop.time()
            if delay > 0:
                if delay > wait_budget_s:
                    raise MCPServerUnavailableError(
                        f"MCP server {name!r} is unavailable ({srv.last_error or 'failed'}); "
                        f"next restart attempt in {delay:.1f}s"
                    )
                await asyncio.sleep(delay)
                continue
            self._launch(srv)

    def _launch(self, srv: _Server) -> None:
        conn = _Conn()
        srv.conn = conn
        task = asyncio.create_task(self._own(srv, conn), name=f"mcp-session-{srv.cfg.name}")
        conn.task = task
        self._owners.add(task)
        task.add_done_callback(self._owners.discard)

    def _request_stop(self, conn: _Conn) -> None:
        conn.stop = True
        conn.wake.set()
        if not conn.is_ready and conn.scope is not None:
            conn.scope.cancel()

    def _mark_dead(self, conn: _Conn) -> None:
        if not conn.dead:
            conn.dead = True
            conn.wake.set()

    async def _open_transport(
        self, srv: _Server, conn: _Conn, stack: contextlib.AsyncExitStack, tg: anyio.abc.TaskGroup
    ) -> tuple[Any, Any]:
        cfg = srv.cfg
        if cfg.transport == "http":
            assert cfg.url is not None
            client = httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0))
            await stack.enter_async_context(client)
            return await stack.enter_async_context(streamable_http_client(cfg.url, http_client=client))
        assert cfg.command is not None
        params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=cfg.env or None, cwd=cfg.cwd)
        read_fd, write_fd = os.pipe()
        errlog = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        try:
            streams = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            errlog.close()  # the child holds its own copy
        self.spawn_count += 1
        tg.start_soon(self._read_stderr, read_fd, conn)
        return streams

    async def _read_stderr(self, fd: int, conn: _Conn) -> None:
        os.set_blocking(fd, False)
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                conn.absorb_stderr(chunk)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                while chunk := os.read(fd, 65536):
                    conn.absorb_stderr(chunk)
            os.close(fd)

    async def _on_message(self, conn: _Conn, message: Any) -> None:
        if isinstance(message, mtypes.ToolListChangedNotification):
            conn.refresh = True  # re-listed by the owner task, never inside the handler
            conn.wake.set()
        elif isinstance(message, Exception):
            logger.debug("MCP transport reported: %r", message)

    async def _own(self, srv: _Server, conn: _Conn) -> None:
        """Owner task: enter transport + session, initialize, list tools, serve until stopped or dead."""
        cfg = srv.cfg
        reason: str | None = None
        scope = anyio.CancelScope(deadline=anyio.current_time() + self._start_timeout_s)
        conn.scope = scope
        try:
            with scope:
                async with contextlib.AsyncExitStack() as stack:
                    tg = await stack.enter_async_context(anyio.create_task_group())
                    stack.callback(tg.cancel_scope.cancel)
                    read, write = await self._open_transport(srv, conn, stack, tg)
                    watched = _WatchedReadStream(read, lambda: self._mark_dead(conn))

                    async def handler(message: Any) -> None:
                        await self._on_message(conn, message)

                    session = await stack.enter_async_context(ClientSession(watched, write, message_handler=handler))
                    await session.initialize()
                    conn.tools = await _list_all_tools(session)
                    scope.deadline = math.inf
                    conn.session = session
                    conn.is_ready = True
                    srv.failures = 0
                    srv.failed = False
                    srv.last_error = None
                    srv.tool_count = len(self._visible(srv, conn))
                    srv.last_used = asyncio.get_running_loop().time()
                    conn.ready.set_result(None)
                    await self._serve(srv, conn, session)
            if scope.cancelled_caught and not conn.is_ready and not conn.stop:
                reason = f"no answer to initialize within {self._start_timeout_s:g}s"
        except Exception as exc:
            if conn.stop:
                reason = None
            elif conn.dead and conn.is_ready:
                reason = "connection closed"
            else:
                reason = _describe_failure(exc, cfg)
                logger.debug("MCP server %r failed", cfg.name, exc_info=True)
        finally:
            self._finish(srv, conn, reason)

    async def _serve(self, srv: _Server, conn: _Conn, session: ClientSession) -> None:
        while not (conn.stop or conn.dead):
            await conn.wake.wait()
            conn.wake.clear()
            if conn.refresh and not (conn.stop or conn.dead):
                conn.refresh = False
                try:
                    with anyio.fail_after(self._start_timeout_s):
                        conn.tools = await _list_all_tools(session)
                    srv.tool_count = len(self._visible(srv, conn))
                except (MCPError, TimeoutError) as exc:
                    logger.warning("MCP server %r: re-listing tools failed: %s", srv.cfg.name, exc)

    def _finish(self, srv: _Server, conn: _Conn, reason: str | None) -> None:
        was_ready = conn.is_ready
        conn.is_ready = False
        conn.session = None
        name = srv.cfg.name
        if conn.stop:
            if srv.conn is conn:
                srv.failed = False
        else:
            if reason is None:
                reason = "connection closed"
            if was_ready:
                reason = "connection closed (the server exited or dropped the connection)"
            tail = conn.stderr_summary()
            if tail:
                reason = f"{reason}; stderr: {tail}"
            srv.failed = True
            srv.last_error = reason
            srv.failures += 1
            srv.next_start_at = asyncio.get_running_loop().time() + self._backoff_delay(srv.failures)
            logger.warning("MCP server %r failed: %s", name, reason)
        if not conn.ready.done():
            detail = (
                f"MCP server {name!r} could not start: {reason}"
                if not conn.stop
                else f"MCP server {name!r} was stopped while starting"
            )
            conn.ready.set_exception(MCPServerUnavailableError(detail))
        if srv.conn is conn:
            srv.conn = None

    async def _reap_loop(self) -> None:
        interval = min(max(self._idle_s / 4, 0.05), 5.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for srv in self._servers.values():
                conn = srv.conn
                if (
                    conn is not None
                    and conn.is_ready
                    and not (conn.dead or conn.stop)
                    and srv.in_flight == 0
                    and now - srv.last_used >= self._idle_s
                ):
                    logger.info("MCP server %r idle for %.0fs: closing its session", srv.cfg.name, self._idle_s)
                    self._request_stop(conn)
