"""A run's record as it grows (what it gathered, its status) and its journal: the one `emit` of a run."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from services.agent.defaults import RunLimits
from services.agent.records import Emit, Journal, RoundReasoning, RunResult, RunSpec, RunStatus, Step
from services.context.fit import Fit
from services.errors import ContextExceededError
from services.lmstudio import ResolvedModel, Usage
from services.mcp import ToolSet
from services.tracing import trace_id


class RunState:
    """What a run was asked, what it has gathered so far, and where it stands. Every event gets a sequence
    number and goes to the run's journal (the run store) when it has one, then to the run's client."""

    def __init__(
        self,
        spec: RunSpec,
        limits: RunLimits,
        model: ResolvedModel,
        servers: list[str],
        tools: ToolSet,
        warnings: list[str],
    ) -> None:
        self.run_id = f"run_{uuid.uuid4().hex[:24]}"
        self.spec = spec
        self.limits = limits
        self.model = model
        self.servers = servers
        self.tools = tools
        self.warnings = warnings
        self.answered_model = model.id
        self.steps: list[Step] = []
        self.usage = Usage()
        self.rounds = 0
        self.reasoning: list[RoundReasoning] = []
        self.client_calls: list[dict[str, Any]] = []
        self.context: list[Fit] = []  # what was fitted to the window
        self.exceeded: ContextExceededError | None = None  # why it ended `context_exceeded`
        self.last_text = ""
        self.status: RunStatus = "queued"
        self.seq = 0  # events so far
        self.journal: Journal | None = None
        self.parent: RunState | None = None  # the pipeline this run is a step of
        self._client_emit: Emit | None = None

    def listen(self, emit: Emit | None) -> None:
        """Send the run's events to `emit` (the client's stream) besides its journal."""
        self._client_emit = emit

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        """Record progress event `event` and pass it on to the client."""
        self.seq += 1
        if self.journal is not None:
            self.journal.event(self.seq, event, data)
        if self._client_emit is not None:
            await self._client_emit(event, data)

    def event_text(self, data: dict[str, Any]) -> str | None:
        """The journal's JSON text of the event just emitted with `data` (None: no journal, or other data)."""
        return self.journal.text(self.seq, data) if self.journal is not None else None

    def set_status(self, status: RunStatus) -> None:
        self.status = status
        if self.journal is not None:
            self.journal.status(status)
        if self.parent is not None and status != "queued":  # a step waiting for a person: its pipeline waits
            self.parent.set_status(status)

    def write_end(self, status: RunStatus, result: RunResult | None, problem: dict[str, Any] | None) -> None:
        """Write the terminal event: the result, or the problem that ended the run."""
        self.status = status
        self.seq += 1
        if self.journal is not None:
            self.journal.finished(self.seq, status, result, problem)

    def result(self, status: RunStatus, output: str, duration_ms: float = 0.0) -> RunResult:
        """The run's result as it stands."""
        return RunResult(
            run_id=self.run_id,
            status=status,
            output=output,
            model=self.answered_model,
            mcp_servers=self.servers,
            rounds=self.rounds,
            steps=self.steps,
            usage=self.usage,
            duration_ms=duration_ms,
            trace_id=trace_id(),
            warnings=self.warnings,
            tool_calls=self.client_calls,
            reasoning=self.reasoning,
            context=self.context,
        )

    def gathered(self, reason: str) -> str:
        """Best output available when the run ends without a final answer."""
        if self.last_text:
            return self.last_text
        results = [f"- {s.name}: {s.output}" for s in self.steps if not s.is_error]
        if not results:
            return f"{reason} No tool results were gathered."
        return f"{reason} Tool results gathered so far:\n" + "\n".join(results)

    def described_options(self) -> dict[str, Any]:
        """What the run store keeps of the request besides the spec's fields (a pipeline: its steps)."""
        return {}

    @property
    def key_label(self) -> str:
        """The API key's name for metrics: configured names only (bounded), `(none)` without keys."""
        return self.spec.access.name if self.spec.access is not None else "(none)"


# gives each new run its journal (the run store), or None when it is not recorded
Journals = Callable[[RunState], Journal | None]
