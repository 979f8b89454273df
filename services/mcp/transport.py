"""Transports to an MCP server (stdio child process, streamable HTTP or legacy HTTP+SSE), the child's stderr,
and readable reasons for a failed start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc

from services.mcp.config import MCPServerConfig, safe_url
from services.mcp.stdio import stdio_pipes
from services.mcp.streams import ReadStream

if TYPE_CHECKING:  # the SDK (and httpx2) are imported when a connection starts, not at start-up
    import mcp_types as mtypes
    from mcp import ClientSession
    from mcp.shared.message import SessionMessage

STDERR_TAIL_LINES = 20
STDERR_HEAD_LINES = 40  # the first lines are kept too: the cause is usually there, the tail is the stack's end
_STDERR_LINE_CHARS = 500
_SUMMARY_CHARS = 800
_READ_CHUNK = 65536
_MAX_TOOL_PAGES = 100
_ERROR_LINE = re.compile(r"error|exception|traceback|cannot|can't|not found|no such|fatal|denied|refused|fail", re.I)


class StderrTail:
    """The first and the last lines a server process wrote to stderr."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.count = 0
        self._partial = b""

    def absorb(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.count += 1
                if len(self.head) < STDERR_HEAD_LINES:
                    self.head.append(text[:_STDERR_LINE_CHARS])
                self.lines.append(text[:_STDERR_LINE_CHARS])

    def summary(self) -> str:
        """The first error lines (the first line that reads as an error and the two after it, else the first
        three lines), then the last two lines when they are others; joined with " | ", at most 800 characters."""
        if self._partial:
            self.absorb(b"\n")
        if not self.head:
            return ""
        start = next((i for i, line in enumerate(self.head) if _ERROR_LINE.search(line)), 0)
        first = self.head[start : start + 3]
        shown = start + len(first)  # lines of the whole stream shown so far, counted from the first
        last = list(self.lines)[-2:]
        skip = max(0, shown - (self.count - len(last)))  # tail lines already among the first ones
        last = last[skip:]
        parts = first + (["..."] if last and self.count - len(last) > shown else []) + last
        text = " | ".join(part.strip() for part in parts)
        return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 3] + "..."


class ReadStreamWrapper(ReadStream):
    """A transport's read stream seen through `receive` (which subclasses change); the rest of the stream
    protocol (iteration, closing, `last_context` and friends) is the inner stream's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # `last_context` and friends
        return getattr(self._inner, name)

    async def receive(self) -> SessionMessage | Exception:
        return cast("SessionMessage | Exception", await self._inner.receive())

    async def aclose(self) -> None:
        await self._inner.aclose()


class WatchedReadStream(ReadStreamWrapper):
    """Wraps a transport's read stream and reports when it ends (the connection died)."""

    def __init__(self, inner: Any, on_close: Callable[[], None]) -> None:
        super().__init__(inner)
        self._on_close = on_close

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await super().receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_close()
            raise


async def open_transport(
    cfg: MCPServerConfig,
    stack: contextlib.AsyncExitStack,
    tg: anyio.abc.TaskGroup,
    stderr: StderrTail,
    auth: Any = None,
) -> tuple[Any, Any]:
    """Enter the server's transport on `stack` and return its (read, write) streams; a stdio server's
    stderr is read into `stderr` by a task in `tg`; `auth` (an `httpx2.Auth`: OAuth) signs an HTTP server's
    requests."""
    from mcp import StdioServerParameters  # the SDK loads with the first connection

    if cfg.transport == "http":
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert cfg.url is not None
        client = httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0), auth=auth)
        await stack.enter_async_context(client)
        return await stack.enter_async_context(streamable_http_client(cfg.url, http_client=client))
    if cfg.transport == "sse":  # the legacy HTTP+SSE transport: a GET event stream + POSTs to its endpoint
        from mcp.client.sse import sse_client

        assert cfg.url is not None
        sse = sse_client(cfg.url, headers=cfg.headers, timeout=30.0, sse_read_timeout=300.0)
        return await stack.enter_async_context(sse)
    assert cfg.command is not None
    params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=cfg.env or None, cwd=cfg.cwd)
    read_fd, write_fd = os.pipe()
    errlog = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
    try:
        streams = await stack.enter_async_context(stdio_pipes(params, errlog))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        errlog.close()  # the child holds its own copy
    tg.start_soon(_read_stderr, read_fd, stderr)
    return streams


async def _read_stderr(fd: int, stderr: StderrTail) -> None:
    os.set_blocking(fd, False)
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                return
            stderr.absorb(chunk)
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, _READ_CHUNK):
                stderr.absorb(chunk)
        os.close(fd)


async def list_all_tools(session: ClientSession) -> list[mtypes.Tool]:
    """Every page of the server's tool list."""
    import mcp_types as mtypes

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


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def _missing_command(leaf: BaseException, cfg: MCPServerConfig) -> str | None:
    if isinstance(leaf, FileNotFoundError):
        return f"command {cfg.command!r} not found"
    if isinstance(leaf, PermissionError):
        return f"command {cfg.command!r} is not executable"
    return None


def _os_failure(leaf: BaseException, cfg: MCPServerConfig) -> str | None:
    if isinstance(leaf, OSError) and not isinstance(leaf, ConnectionError):
        return f"cannot run {cfg.command!r}: {leaf.strerror or leaf}"
    return None


def _mcp_failure(leaf: BaseException, cfg: MCPServerConfig) -> str | None:
    if "mcp" not in sys.modules:  # an SDK error needs the SDK: a failure before it loaded is none
        return None
    from mcp import MCPError
    from mcp_types import CONNECTION_CLOSED

    if not isinstance(leaf, MCPError):
        return None
    if leaf.code == CONNECTION_CLOSED:
        return "the server closed the connection before initialization finished (did it exit?)"
    return f"MCP error {leaf.code}: {leaf.message}"


def _http_failure(leaf: BaseException, cfg: MCPServerConfig) -> str | None:
    httpx2 = sys.modules.get("httpx2")  # not loaded: the failure cannot be one of its errors
    return f"{type(leaf).__name__}: {leaf}" if httpx2 is not None and isinstance(leaf, httpx2.HTTPError) else None


# Most telling first: each one looks at every leaf of the failure before the next one is tried.
_DESCRIBERS: tuple[Callable[[BaseException, MCPServerConfig], str | None], ...] = (
    _missing_command,
    _os_failure,
    _mcp_failure,
    _http_failure,
)


def describe_failure(exc: BaseException, cfg: MCPServerConfig) -> str:
    """Why a server could not start, in words an operator can act on; a remote server's names its URL."""
    reason = _describe(exc, cfg)
    url = safe_url(cfg.url)
    if cfg.transport in ("http", "sse") and url and url not in reason:
        reason = f"{reason} ({cfg.transport.upper()} server at {url})"
    return reason


def _describe(exc: BaseException, cfg: MCPServerConfig) -> str:
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    for describe in _DESCRIBERS:
        for leaf in leaves:
            reason = describe(leaf, cfg)
            if reason is not None:
                return reason
    leaf = leaves[0]
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
