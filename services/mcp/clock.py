"""A tool call's clock: its timeout, reset by each progress notification the server sends for the call, up to a
hard maximum (BRIDGE_MCP_PROGRESS_MAX_S) counted from the call's start.

The timeout that applies is the tool's own (`bridge.tool_timeouts` in mcp.json), else the server's `timeout`,
else the caller's, else BRIDGE_MCP_CALL_TIMEOUT_S. A call asks for progress (a `progressToken`) only when the
hard maximum lies beyond its timeout; otherwise the clock is a plain deadline, as cheap as one.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from services.errors import MCPToolTimeoutError

# which limit cut a call: its timeout (no progress came in time) or the hard maximum (progress went on too long)
Limit = Literal["timeout", "hard_max"]


class CallClock:
    """One call's deadlines (loop time) and the progress notifications that moved them."""

    __slots__ = ("_timer", "deadline", "hard_deadline", "max_s", "resets", "timeout_s")

    def __init__(self, timeout_s: float, started: float, max_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = started + timeout_s
        self.max_s = max_s
        self.hard_deadline = started + max_s
        self.resets = 0  # progress notifications that reset the timeout
        self._timer: asyncio.Timeout | None = None

    @property
    def tracks_progress(self) -> bool:
        """Whether progress may extend the call (the hard maximum lies beyond the timeout)."""
        return self.hard_deadline > self.deadline

    def watch(self, timer: asyncio.Timeout) -> None:
        """Progress from now on moves `timer` (entered by the calling task, at `deadline`)."""
        self._timer = timer

    def unwatch(self) -> None:
        """The call is over: late progress changes nothing."""
        self._timer = None

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's progress callback: the timeout starts again from now, never past the hard maximum."""
        timer = self._timer
        if timer is None:
            return
        now = asyncio.get_running_loop().time()
        self.deadline = min(now + self.timeout_s, self.hard_deadline)
        self.resets += 1
        timer.reschedule(self.deadline)

    @property
    def limit(self) -> Limit:
        """The limit that cut the call, once it timed out."""
        return "hard_max" if self.resets and self.deadline >= self.hard_deadline else "timeout"

    def timed_out(self, server: str, tool: str) -> MCPToolTimeoutError:
        """The error of a call this clock cut; its problem document says which limit and how many resets."""
        if self.limit == "hard_max":
            detail = (
                f"Tool {tool!r} on MCP server {server!r} was cut at the hard maximum of {self.max_s:g}s "
                f"(BRIDGE_MCP_PROGRESS_MAX_S) after {self.resets} progress notifications"
            )
        else:
            detail = f"Tool {tool!r} on MCP server {server!r} did not answer within {self.timeout_s:g}s"
            if self.resets:
                detail += f" of its last progress notification ({self.resets} so far)"
        return MCPToolTimeoutError(detail, timeout_s=self.timeout_s, progress_resets=self.resets, limit=self.limit)
