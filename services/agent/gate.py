"""The approval gate of a run: tool calls that need a person's yes wait here for a decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from services.agent.approvals import ApprovalPolicy, ApprovalRequest, Asker, Decision
from services.agent.records import Emit, RunEvent, RunStatus
from services.mcp import ToolSpec

log = logging.getLogger("lmstudio_bridge.agent")


class ApprovalGate:
    """Asks for a decision on each call the policy names; a run that cannot wait for a person denies it.
    An interactive run waits for the REST route (`decide`) and, when its client can be asked (`asker`), for the
    client's answer too: the first decision counts."""

    def __init__(
        self,
        policy: ApprovalPolicy,
        timeout_s: float,
        *,
        interactive: bool,
        asker: Asker | None = None,
        emit: Emit,
        warnings: list[str],
        set_status: Callable[[RunStatus], None],
        deadline_paused: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._policy = policy
        self._timeout_s = timeout_s
        self._interactive = interactive
        self._asker = asker
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
                "so the call was denied (start the run with POST /v1/runs, or call the MCP front door "
                "from a client that supports elicitation, to approve calls)"
            )
            return Decision("denied", "it needs a person's approval, which this run cannot ask for")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self._set_status("awaiting_approval")
        request = {"tool_call_id": call_id, "name": name, "server": spec.server, "tool": spec.name}
        await self._emit(RunEvent.APPROVAL_REQUESTED, {**request, "arguments": arguments})
        asking = self._ask_client(call_id, ApprovalRequest(call_id, name, spec.server, spec.name, arguments))
        try:
            decision = await self._wait(call_id, future)
        except asyncio.CancelledError:  # the run was cancelled (or stopped) while the call waited: the request ends
            reason = "the run was cancelled before a decision came"
            await self._emit(RunEvent.APPROVAL_DECIDED, {**request, "decision": "cancelled", "reason": reason})
            raise
        finally:
            if asking is not None:  # decided another way (REST, a timeout) or cancelled: the question is withdrawn
                asking.cancel()
        await self._emit(
            RunEvent.APPROVAL_DECIDED, {**request, "decision": decision.verdict, "reason": decision.reason}
        )
        return decision

    def _ask_client(self, call_id: str, request: ApprovalRequest) -> asyncio.Task[None] | None:
        """Ask the run's client (when it can be asked) in a task of its own; its answer decides the call."""
        asker = self._asker
        if asker is None:
            return None

        async def ask() -> None:
            try:
                decision = await asker(request)
            except Exception as exc:  # the client could not be asked: the REST route still decides
                log.warning("approval of %s (%s): the client could not be asked: %r", request.name, call_id, exc)
                return
            if decision is not None:
                self.decide(call_id, decision)

        return asyncio.create_task(ask(), name=f"approval {call_id}")

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
