"""MCP session pool: one lazily started, long-lived session per configured MCP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from typing import Any, cast

from opentelemetry.trace import SpanKind

from services.breaker import Breaker
from services.errors import (
    InvalidRequestError,
    MCPServerNotFoundError,
    MCPServerUnavailableError,
    MCPToolNotFoundError,
    MCPToolTimeoutError,
)
from services.mcp import resources
from services.mcp.config import MCPServerConfig
from services.mcp.connection import counts_against_server
from services.mcp.oauth import OAuthClients
from services.mcp.resources import PromptInfo, ResourceInfo
from services.mcp.session import RECURSION_SKIPPED, STOP_WAIT_S, ServerStatus, Session
from services.mcp.tools import ToolResult, ToolSet, ToolSpec, model_tool_name
from services.metrics import Metrics
from services.text import unencodable_path
from services.tracing import clip, tracer

UNKNOWN_TOOL = "(unknown)"  # the metric label of calls to tools the server does not have
MAX_LABEL_CHARS = 64
DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_PROGRESS_MAX_S = 600.0  # a call that reports progress runs at most this long (BRIDGE_MCP_PROGRESS_MAX_S)
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_IDLE_S = 600.0
DEFAULT_MAX_CONCURRENCY = 16
MAX_CACHED_TOOLS = 4096  # span names and attributes kept (tools the servers offer)


class MCPPool:
    """Lazily started MCP sessions, one per server, with restart, timeouts and idle close."""

    def __init__(
        self,
        servers: dict[str, MCPServerConfig],
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        progress_max_s: float = DEFAULT_PROGRESS_MAX_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        idle_s: float = DEFAULT_IDLE_S,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        restart_backoff_s: float = 1.0,
        restart_backoff_max_s: float = 30.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        metrics: Metrics | None = None,
        capture_content: bool = False,
        oauth: OAuthClients | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.oauth = oauth  # remote servers' OAuth (shared with the other pools of the gateway)
        self.capture_content = capture_content

        def session(cfg: MCPServerConfig) -> Session:
            breaker = Breaker(
                f"MCP server {cfg.name!r}",
                failures=breaker_failures,
                reset_s=breaker_reset_s,
                counts=counts_against_server,
                unavailable=lambda detail, wait: MCPServerUnavailableError(detail, retry_after=wait),
            )
            return Session(
                cfg,
                breaker,
                max_concurrency=max_concurrency,
                start_timeout_s=start_timeout_s,
                backoff_s=restart_backoff_s,
                backoff_max_s=restart_backoff_max_s,
                progress_max_s=progress_max_s,
                auth=oauth.for_server(cfg) if oauth is not None else None,
            )

        self._sessions = {name: session(cfg) for name, cfg in servers.items()}
        self._call_timeout_s = call_timeout_s
        self._idle_s = idle_s
        self._reaper: asyncio.Task[None] | None = None
        # tool sets of server sets, kept while the tool lists they came from last
        self._tool_sets: dict[tuple[str, ...], tuple[list[list[ToolSpec]], ToolSet]] = {}
        # per tool: span name and attributes (the tools are bounded, see `_span_of`)
        self._spans: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}

    @property
    def spawn_count(self) -> int:
        """Server processes started so far."""
        return sum(s.spawn_count for s in self._sessions.values())

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, warmup: bool = False) -> None:
        """Launch the idle reaper; with `warmup`, start every enabled server (failures are recorded)."""
        if self._reaper is None and self._idle_s > 0 and math.isfinite(self._idle_s):
            self._reaper = asyncio.create_task(self._reap_loop(), name="mcp-pool-reaper")
        if warmup:
            await asyncio.gather(*(s.warm() for s in self._sessions.values() if not s.cfg.disabled))

    async def aclose(self) -> None:
        """Close every session and wait for the server processes to end."""
        for session in self._sessions.values():
            session.close()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        owners = set().union(*(s.owners for s in self._sessions.values()))
        if owners:
            _, pending = await asyncio.wait(owners, timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_WAIT_S)

    async def _reap_loop(self) -> None:
        interval = min(max(self._idle_s / 4, 0.05), 5.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for session in self._sessions.values():
                session.stop_if_idle(now, self._idle_s)

    # --- queries -----------------------------------------------------------------------

    def names(self) -> list[str]:
        """Enabled server names, in config order."""
        return [name for name, s in self._sessions.items() if not s.cfg.disabled]

    def status(self) -> list[ServerStatus]:
        """Status of every configured server (secret-free)."""
        return [s.status() for s in self._sessions.values()]

    async def recheck_logins(self) -> None:
        """Servers waiting for a person's OAuth login: has it happened since (`lmstudio-bridge auth`)?"""
        for session in self._sessions.values():
            if session.auth is not None and session.auth.needs_login:
                await session.auth.recheck()

    def live_sessions(self) -> int:
        """Number of sessions that are up and usable."""
        return sum(1 for s in self._sessions.values() if s.live)

    def _get(self, name: str) -> Session:
        session = self._sessions.get(name)
        if session is None:
            raise MCPServerNotFoundError(name, self.names())
        if session.cfg.disabled:
            if session.cfg.unusable:
                raise MCPServerUnavailableError(f"MCP server {name!r} is disabled: {session.cfg.unusable}")
            why = RECURSION_SKIPPED if session.cfg.is_bridge else "disabled in mcp.json"
            raise MCPServerUnavailableError(f"MCP server {name!r} is {why}")
        return session

    async def list_tools(self, server: str) -> list[ToolSpec]:
        """The server's tools (filtered by allowedTools/disabledTools); starts it if needed."""
        return (await self._get(server).list_tools(self._call_timeout_s)).specs

    async def find_tool(self, server: str, tool: str) -> ToolSpec | None:
        """One of the server's tools by name (None when it does not offer it); starts the server if needed."""
        return (await self._get(server).list_tools(self._call_timeout_s)).by_name.get(tool)

    async def tool_set(self, servers: list[str]) -> ToolSet:
        """Tools of these servers (started concurrently) with collision-safe model names; the same
        tool set object while none of the servers' tool lists changes."""
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
        cached = self._tool_sets.get(unique)
        if cached is not None and all(a is b for a, b in zip(cached[0], lists, strict=True)):
            return cached[1]
        tools = ToolSet.named(spec for listed in lists for spec in listed)
        self._tool_sets[unique] = (lists, tools)
        return tools

    # --- resources and prompts ------------------------------------------------------------

    async def list_resources(self, server: str) -> list[ResourceInfo]:
        """The server's resources (cached while its session lasts); starts it if needed."""
        return await resources.resources_of(await self._get(server).use(self._call_timeout_s), self._call_timeout_s)

    async def read_resource(self, server: str, uri: str) -> str:
        """One resource of the server, as text."""
        conn = await self._get(server).use(self._call_timeout_s)
        return await resources.read_resource(conn, uri, self._call_timeout_s)

    async def list_prompts(self, server: str) -> list[PromptInfo]:
        """The server's prompts; starts it if needed."""
        return await resources.prompts_of(await self._get(server).use(self._call_timeout_s), self._call_timeout_s)

    async def prompt_messages(self, server: str, name: str, arguments: dict[str, str]) -> list[dict[str, Any]]:
        """A prompt of the server rendered with `arguments`, as chat messages."""
        conn = await self._get(server).use(self._call_timeout_s)
        return await resources.prompt_messages(conn, name, arguments, self._call_timeout_s)

    # --- calls -------------------------------------------------------------------------

    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
        text_checked: bool = False,
    ) -> ToolResult:
        """Call one tool. Tool-reported errors come back as `is_error=True`, not as exceptions. `text_checked`: the
        caller has made sure no string in `arguments` holds text UTF-8 cannot encode (else it is checked here).

        Traced as `tools/call <server>__<tool>`; the SDK adds the trace context to the request's `_meta`.
        """
        session = self._get(server)
        bad = None if text_checked else unencodable_path(arguments)
        if bad:  # it would break the server's stream and with it the session every caller shares
            raise InvalidRequestError(
                f"The argument {bad} holds text that is not valid Unicode (a lone surrogate)", field=bad
            )
        span_name, attributes = self._span_of(server, tool)
        started, outcome, resets = time.perf_counter(), "error", 0
        with tracer.start_as_current_span(span_name, kind=SpanKind.CLIENT, attributes=attributes) as span:
            if self.capture_content:
                span.set_attribute("bridge.tool.arguments", clip(json.dumps(arguments, default=str)))
            try:
                result = await session.call_tool(tool, arguments, timeout_s or self._call_timeout_s, meta)
                outcome = "tool_error" if result.is_error else "ok"
                resets = result.progress_resets
                if self.capture_content:
                    span.set_attribute("bridge.tool.output", clip(result.text))
                return result
            except MCPToolTimeoutError as exc:
                outcome, resets = "timeout", exc.extras.get("progress_resets", 0)
                limit = exc.extras.get("limit", "timeout")
                self.metrics.tool_timeouts.labels(server, self._label(session, tool), limit).inc()
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
                label, metrics = self._label(session, tool), self.metrics
                metrics.child(metrics.tool_calls, server, label, outcome).inc()
                metrics.child(metrics.tool_duration, server, label).observe(time.perf_counter() - started)
                if resets:
                    self.metrics.tool_progress_resets.labels(server, label).inc(resets)

    @staticmethod
    def _label(session: Session, tool: str) -> str:
        """The tool's metric label: bounded, only tools the server has, never what a client made up."""
        return tool[:MAX_LABEL_CHARS] if session.knows_tool(tool) else UNKNOWN_TOOL

    def _span_of(self, server: str, tool: str) -> tuple[str, dict[str, str]]:
        """The span name and attributes of calls of one tool, made once per tool (a read-only mapping: the
        SDK copies span attributes). Kept for tools the server offers, so the cache stays bounded."""
        cached = self._spans.get((server, tool))
        if cached is None:
            attributes = {"mcp.server": server, "gen_ai.tool.name": tool, "gen_ai.operation.name": "execute_tool"}
            cached = (f"tools/call {model_tool_name(server, tool)}", attributes)
            if self._sessions[server].knows_tool(tool) and len(self._spans) < MAX_CACHED_TOOLS:
                self._spans[(server, tool)] = cached
        return cached
