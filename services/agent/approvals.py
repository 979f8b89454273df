"""Tool calls that need a person's yes before they run (BRIDGE_APPROVAL_TOOLS, mcp.json `bridge.approval_tools`).

The word `destructive` among the globs names every tool whose server does not say it is read-only or not
destructive (its `readOnlyHint` / `destructiveHint` annotations): a convenience built on hints a server gives
about itself, never a guarantee; a tool that must always be approved is named by a glob.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from services.mcp.tools import qualified_name

Verdict = Literal["approved", "denied", "timed_out"]
DESTRUCTIVE = "destructive"  # the rule naming the tools whose hints do not say they are safe
REASON_MAX_CHARS = 2000  # the longest reason a decision records


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """`patterns` are globs over `<server>__<tool>`; `per_server` globs over one server's tool names; either may
    hold the word `destructive`."""

    patterns: tuple[str, ...] = ()
    per_server: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, patterns: Iterable[str], per_server: Mapping[str, Iterable[str]]) -> ApprovalPolicy:
        return cls(tuple(patterns), {name: tuple(globs) for name, globs in per_server.items() if globs})

    def __bool__(self) -> bool:
        return bool(self.patterns or self.per_server)

    def needs(self, server: str, tool: str, destructive: bool = True) -> bool:
        """Whether a call of `tool` needs approval; `destructive` is what the tool's hints say (ToolSpec)."""
        name = qualified_name(server, tool)
        own = self.per_server.get(server, ())
        if destructive and (DESTRUCTIVE in self.patterns or DESTRUCTIVE in own):
            return True
        if any(fnmatchcase(name, p) for p in self.patterns):
            return True
        return any(fnmatchcase(tool, p) for p in own)


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to one tool call (or the answer given for them)."""

    verdict: Verdict
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.verdict == "approved"

    def message(self) -> str:
        """What the model reads as the tool's result when the call was not approved."""
        why = f": {self.reason}" if self.reason else ""
        if self.verdict == "timed_out":
            return f"Error: this tool call was not run: nobody approved it in time{why}"
        return f"Error: this tool call was not run: a person denied it{why}"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One tool call awaiting a decision, as `approval.requested` shows it: the exact arguments that would run."""

    tool_call_id: str
    name: str  # <server>__<tool>, as the model called it
    server: str
    tool: str
    arguments: Any


# asks the run's own client for a decision (the MCP front door: elicitation) beside the REST route; None: the
# client gave none (the request stays open for the REST route until BRIDGE_APPROVAL_TIMEOUT_S)
Asker = Callable[[ApprovalRequest], Awaitable[Decision | None]]
