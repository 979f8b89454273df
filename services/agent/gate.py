"""The approval gate of a run: tool calls that need a person's yes wait here for a decision."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from services.agent.approvals import ApprovalPolicy, Decision
from services.agent.records import Emit, RunEvent, RunStatus
from services.mcp import ToolSpec


class ApprovalGate:
    """Asks for a decision on each call the policy names; a run that cannot wait for a person denies it."""

    def __init__(
        self,
        policy: ApprovalPolicy,
        timeout_s: float,
        *,
        interactive: bool,
        emit: Emit,
        warnings: list[str],
        set_status: Callable[[RunStatus], None],
        deadline_paused: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._policy = policy
        self._timeout_s = timeout_s
        self._interactive = interactive
        self._emit = emit
        self._warnings = warnings
        self._set_status = set_status
        self._deadline_paused = deadline_paused  # a person's time does not count against the run's deadline
        self.pending: dict[str, asyncio.Future[Decision]] = {}

    @property
    def waiting(self) -> list[str]:
        """The ids of the tool calls awaiting a person's decision."""
        return sorted(self.pending)

    def decide(self, tool_call_id: str, decision: Decision) -> bool:
        """A person's decision on a call awaiting approval; False when no such call is waiting."""
        future = self.pending.get(tool_call_id)
        if future is None or future.done():
            return False
        future.set_result(decision)
        return True

    async def ask(self, call_id: str, spec: ToolSpec, arguments: Any) -> Decision | None:
        """None when the tool needs no approval; else a person's decision (interactive runs) or a denial."""
        if not self._policy.needs(spec.server, spec.name, spec.destructive):
            return None
        name = spec.model_name
        if not self._interactive:
            self._warnings.append(
                f"The model called {name}, which needs a person's approval; a synchronous run cannot wait for one, "
                "so the call was denied (start the run with POST /v1/runs to approve calls)"
            )
            return Decision("denied", "it needs a person's approval, which this run cannot ask for")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self._set_status("awaiting_approval")
        request = {"tool_call_id": call_id, "name": name, "server": spec.server, "tool": spec.name}
        await self._emit(RunEvent.APPROVAL_REQUESTED, {**request, "arguments": arguments})
        try:
            decision = await self._wait(call_id, future)
        except asyncio.CancelledError:  # the run was cancelled (or stopped) while the call waited: the request ends
            reason = "the run was cancelled before a decision came"
            await self._emit(RunEvent.APPROVAL_DECIDED, {**request, "decision": "cancelled", "reason": reason})
            raise
        await self._emit(
            RunEvent.APPROVAL_DECIDED, {**request, "decision": decision.verdict, "reason": decision.reason}
        )
        return decision

    async def _wait(self, call_id: str, future: asyncio.Future[Decision]) -> Decision:
        try:
            with self._deadline_paused():
                async with asyncio.timeout(self._timeout_s):
                    return await future
        except TimeoutError:
            return Decision("timed_out", f"no decision within {self._timeout_s:g} s")
        finally:
            del self.pending[call_id]
            if not self.pending:
                self._set_status("running")
