"""One run's life: started, carried out by its loop policy, stopped (cancel, deadline, shutdown), ended with
a result or a problem; traced and counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from services.agent.approvals import Decision
from services.agent.context import RunContext
from services.agent.gate import ApprovalGate
from services.agent.lease import RunLease
from services.agent.model_call import ModelCaller
from services.agent.policy import AgentLoop
from services.agent.records import Emit, RunEvent, RunResult, RunSpec, RunStatus
from services.agent.state import RunState
from services.errors import BridgeError, ClientGoneError, RunInterruptedError, ShuttingDownError
from services.lmstudio import ResolvedModel
from services.mcp import ToolSet
from services.tracing import clip, current_run_id, tracer

log = logging.getLogger("lmstudio_bridge.agent")


class Run(RunState):
    """One run, made by `AgentService.prepare` (`open` also takes its run slot); `execute` releases the slot."""

    def __init__(
        self,
        ctx: RunContext,
        spec: RunSpec,
        model: ResolvedModel,
        servers: list[str],
        tools: ToolSet,
        warnings: list[str],
        lease: RunLease,
        active: set[Run],
    ) -> None:
        super().__init__(spec, ctx.defaults.limits_for(spec), model, servers, tools, warnings)
        self.ctx = ctx
        self.lease = lease
        self._active = active  # the service's runs in flight, for a graceful shutdown
        self.caller = ModelCaller(ctx, self, self.limits.max_tokens)
        self.gate = ApprovalGate(
            ctx.approvals,
            ctx.defaults.approval_timeout_s,
            interactive=spec.interactive,
            asker=spec.asker,
            emit=self.emit,
            warnings=warnings,
            set_status=self.set_status,
            deadline_paused=self.deadline_paused,
        )
        self.task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._cancel_requested = False
        self._timeout: asyncio.Timeout | None = None
        self._waiting = 0  # calls of this run (or of its steps) waiting for a person's decision now
        self._paused: tuple[float, float | None] = (0.0, None)  # (since, the timeout's `when`) while they wait

    def hold_slot(self) -> None:
        self.lease.hold_slot()

    def release(self) -> None:
        """Give the run slot (and the key's run) back (idempotent); `execute` does it itself."""
        self.lease.release()

    @property
    def waiting(self) -> list[str]:
        """The ids of the tool calls awaiting a person's decision."""
        return self.gate.waiting

    def decide(self, tool_call_id: str, decision: Decision) -> bool:
        """A person's decision on a call awaiting approval; False when no such call is waiting."""
        return self.gate.decide(tool_call_id, decision)

    def stop_for_shutdown(self) -> None:
        """Cancel the run because the gateway stops; `execute` then raises ShuttingDownError."""
        if self.task is not None and not self.task.done():
            self._stopping = True
            self.task.cancel()

    def cancel(self) -> bool:
        """Stop the executing run on a client's request: it ends `cancelled` with what it gathered.
        False when it is not executing (not started yet, or finished)."""
        if self.task is None or self.task.done():
            return False
        if not self._cancel_requested:
            self._cancel_requested = True
            self.task.cancel()
        return True

    def finish(self, status: RunStatus, result: RunResult | None, problem: dict[str, Any] | None) -> None:
        """The run has ended: its key's run is given back, and its terminal event written."""
        self.lease.leave_key()
        metrics = self.ctx.metrics
        metrics.child(metrics.key_runs, self.key_label, status).inc()
        self.write_end(status, result, problem)

    @contextlib.contextmanager
    def deadline_paused(self) -> Iterator[None]:
        """Time spent waiting for a person does not count against the run's deadline (nor its pipeline's): the
        deadline stands still while any call waits for a decision. (Moved only once the decision came, a wait
        past the deadline ended the run `failed`: the expired timeout could not be rescheduled.)"""
        with contextlib.ExitStack() as outer:
            if isinstance(self.parent, Run):
                outer.enter_context(self.parent.deadline_paused())
            self._waiting += 1
            if self._waiting == 1:
                timeout = self._timeout
                when = timeout.when() if timeout is not None and not timeout.expired() else None
                if timeout is not None and when is not None:
                    timeout.reschedule(None)
                self._paused = (time.monotonic(), when)
            try:
                yield
            finally:
                self._waiting -= 1
                if not self._waiting:
                    since, when = self._paused
                    waited_s = time.monotonic() - since
                    self.caller.deadline += waited_s
                    if self._timeout is not None and when is not None and not self._timeout.expired():
                        self._timeout.reschedule(when + waited_s)

    async def body(self) -> tuple[RunStatus, str]:
        """What the run does between its start and its end (a pipeline runs its steps instead)."""
        return await AgentLoop(self.ctx, self, self.caller, self.gate, self.limits.max_rounds).run()

    async def execute(self, emit: Emit | None = None) -> RunResult:
        """Carry out the run. Cancelling the calling task cancels the LM Studio call and tool calls."""
        self.task = asyncio.current_task()
        if self.parent is None:  # a pipeline's step is stopped with its pipeline
            self._active.add(self)
        current_run_id.set(self.run_id)
        self.listen(emit)
        self.set_status("running")
        capture = self.ctx.defaults.capture_content
        attributes = {
            "bridge.run_id": self.run_id,
            "gen_ai.request.model": self.model.id,
            "bridge.mcp_servers": self.servers,
            "gen_ai.operation.name": "invoke_agent",
        }
        if capture:
            attributes["bridge.task"] = clip(self.spec.task)
        started = time.monotonic()
        status: RunStatus = "failed"
        try:
            with tracer.start_as_current_span("agent.run", attributes=attributes) as span:
                result = await self._carry_out()
                status = result.status
                span.set_attributes(
                    {"bridge.status": status, "bridge.rounds": result.rounds, "gen_ai.response.model": result.model}
                )
                if capture:
                    span.set_attribute("bridge.output", clip(result.output))
                log.info(
                    "run finished: %s after %d round(s), %d tool call(s), %d tokens, %.0f ms",
                    status,
                    result.rounds,
                    len(result.steps),
                    result.usage.total_tokens,
                    result.duration_ms,
                )
                self.finish(result.status, result, None)
                return result
        except asyncio.CancelledError:
            if not self._stopping or self.task is None:
                status = "cancelled"
                self.finish(status, None, ClientGoneError("The run was cancelled: its client went away").problem())
                raise
            status = "interrupted"
            self.task.uncancel()
            detail = f"The gateway shut down while run {self.run_id} was in progress"
            self.finish(status, None, RunInterruptedError(detail).problem())
            raise ShuttingDownError(detail, retry_after=5) from None
        except BridgeError as exc:
            log.warning("run failed: %s (%s)", exc.detail, exc.code)  # the log's formatter redacts secrets
            self.finish("failed", None, exc.problem())
            raise
        except Exception:
            self.finish("failed", None, BridgeError("The run failed unexpectedly").problem())
            raise
        finally:
            self._active.discard(self)
            metrics = self.ctx.metrics
            metrics.child(metrics.runs, status).inc()
            metrics.child(metrics.run_duration, status).observe(time.monotonic() - started)
            metrics.child(metrics.run_rounds, status).observe(self.rounds)

    async def _carry_out(self) -> RunResult:
        started = time.monotonic()
        timeout_s = self.limits.timeout_s
        self.caller.deadline = started + timeout_s
        status: RunStatus = "completed"
        output = ""
        try:
            await self.emit(
                RunEvent.STARTED,
                {
                    "run_id": self.run_id,
                    "model": self.model.id,
                    "mcp_servers": self.servers,
                    "tools": [t.model_name for t in self.tools.tools],
                },
            )
            try:
                async with asyncio.timeout(timeout_s) as self._timeout:
                    status, output = await self.body()
            except TimeoutError:
                status, output = "timeout", self.gathered(f"The run reached its {timeout_s:g} s deadline.")
            except asyncio.CancelledError:
                if not self._cancel_requested or self._stopping or self.task is None:
                    raise
                self.task.uncancel()  # cancelled on request: an ordinary end with what was gathered
                status, output = "cancelled", self.gathered("The run was cancelled.")
        finally:
            self.release()
        return self.result(status, output, round((time.monotonic() - started) * 1000, 2))
