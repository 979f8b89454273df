"""One run of the agent loop: ask the model, run the tools it calls, feed the results back, repeat."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from services.agent.answers import recover_text_calls
from services.agent.approvals import Decision
from services.agent.prompts import FINAL_ANSWER_PROMPT, REPEATED_CALL_PROMPT, default_system_prompt
from services.agent.records import (
    Emit,
    Journal,
    RoundReasoning,
    RunEvent,
    RunResult,
    RunSpec,
    RunStatus,
    Step,
    ToolChoice,
)
from services.agent.tool_steps import run_tool_call
from services.errors import BridgeError, ClientGoneError, RunInterruptedError, ShuttingDownError
from services.lmstudio import ChatResult, ResolvedModel, ToolCall, Usage
from services.mcp import ToolSet, ToolSpec
from services.text import scrub
from services.tracing import clip, current_run_id, trace_id, tracer

if TYPE_CHECKING:
    from services.agent.service import AgentService

log = logging.getLogger("lmstudio_bridge.agent")


class Run:
    """One run, made by `AgentService.prepare` (`open` also takes its run slot); `execute` releases the slot.
    Every event gets a sequence number and goes to the run's journal (the run store) when it has one."""

    def __init__(
        self,
        service: AgentService,
        spec: RunSpec,
        model: ResolvedModel,
        servers: list[str],
        tools: ToolSet,
        warnings: list[str],
    ) -> None:
        self.service = service
        self.spec = spec
        self.model = model
        self.servers = servers
        self.tools = tools
        self.run_id = f"run_{uuid.uuid4().hex[:24]}"
        self.max_rounds = spec.max_rounds or service.defaults.max_rounds
        self._max_chars = service.defaults.tool_output_max_chars
        self.steps: list[Step] = []
        self.usage = Usage()
        self.rounds = 0
        self.warnings = warnings
        self.reasoning: list[RoundReasoning] = []
        self.answered_model = model.id
        self.journal: Journal | None = None
        self.parent: Run | None = None  # the pipeline this run is a step of
        self.status: RunStatus = "queued"
        self.seq = 0  # events so far
        self.pending: dict[str, asyncio.Future[Decision]] = {}  # tool calls awaiting a person's decision
        self._released = True  # no slot held until `hold_slot`
        self.holds_key_run = spec.access is not None  # one of the key's concurrent runs (AgentService.prepare)
        self._last_text = ""
        self.client_calls: list[dict[str, Any]] = []
        self.task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._cancel_requested = False
        self._emit: Emit = _no_emit
        self.deadline = 0.0
        self._timeout: asyncio.Timeout | None = None
        self._client_tool_names = {t.get("function", {}).get("name") for t in spec.client_tools}
        self._last_call: tuple[str, str] | None = None
        self._same_calls = 0

    def hold_slot(self) -> None:
        """The run has taken a slot of the run limiter; `release` gives it back."""
        self._released = False

    def release(self) -> None:
        """Give the run slot (and the key's run) back (idempotent); `execute` does it itself."""
        self._leave_key()
        if not self._released:
            self._released = True
            self.service.limiter.release()

    def set_status(self, status: RunStatus) -> None:
        self.status = status
        if self.journal is not None:
            self.journal.status(status)
        if self.parent is not None and status != "queued":  # a step waiting for a person: its pipeline waits
            self.parent.set_status(status)

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

    def _leave_key(self) -> None:
        if self.holds_key_run and self.spec.access is not None:
            self.holds_key_run = False
            self.service.keys.leave_run(self.spec.access)

    def finish(self, status: RunStatus, result: RunResult | None, problem: dict[str, Any] | None) -> None:
        """Write the terminal event: the result, or the problem that ended the run."""
        self._leave_key()
        self.service.metrics.key_runs.labels(self.key_label, status).inc()
        self.status = status
        self.seq += 1
        if self.journal is not None:
            self.journal.finished(self.seq, status, result, problem)

    async def _record(self, emit: Emit, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        if self.journal is not None:
            self.journal.event(self.seq, event, data)
        await emit(event, data)

    async def execute(self, emit: Emit | None = None) -> RunResult:
        """Carry out the run. Cancelling the calling task cancels the LM Studio call and tool calls."""
        self.task = asyncio.current_task()
        if self.parent is None:  # a pipeline's step is stopped with its pipeline
            self.service.active.add(self)
        current_run_id.set(self.run_id)
        client_emit = emit or _no_emit

        async def record(event: str, data: dict[str, Any]) -> None:
            await self._record(client_emit, event, data)

        self._emit = record
        self.set_status("running")
        attributes = {
            "bridge.run_id": self.run_id,
            "gen_ai.request.model": self.model.id,
            "bridge.mcp_servers": self.servers,
            "gen_ai.operation.name": "invoke_agent",
        }
        if self.service.defaults.capture_content:
            attributes["bridge.task"] = clip(self.spec.task)
        started = time.monotonic()
        status: RunStatus = "failed"
        try:
            with tracer.start_as_current_span("agent.run", attributes=attributes) as span:
                result = await self._execute(record)
                status = result.status
                span.set_attributes(
                    {"bridge.status": status, "bridge.rounds": result.rounds, "gen_ai.response.model": result.model}
                )
                if self.service.defaults.capture_content:
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
            self.finish("failed", None, exc.problem())
            raise
        except Exception:
            self.finish("failed", None, BridgeError("The run failed unexpectedly").problem())
            raise
        finally:
            self.service.active.discard(self)
            metrics = self.service.metrics
            metrics.runs.labels(status).inc()
            metrics.run_duration.labels(status).observe(time.monotonic() - started)
            metrics.run_rounds.labels(status).observe(self.rounds)

    async def _execute(self, emit: Emit) -> RunResult:
        started = time.monotonic()
        timeout_s = self.spec.timeout_s or self.service.defaults.run_timeout_s
        self.deadline = started + timeout_s
        status: RunStatus = "completed"
        output = ""
        try:
            await emit(
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
                    status, output = await self._loop(emit)
            except TimeoutError:
                status, output = "timeout", self._gathered(f"The run reached its {timeout_s:g} s deadline.")
            except asyncio.CancelledError:
                if not self._cancel_requested or self._stopping or self.task is None:
                    raise
                self.task.uncancel()  # cancelled on request: an ordinary end with what was gathered
                status, output = "cancelled", self._gathered("The run was cancelled.")
        finally:
            self.release()
        return self.result(status, output, round((time.monotonic() - started) * 1000, 2))

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
        )

    def described_options(self) -> dict[str, Any]:
        """What the run store keeps of the request besides the spec's fields (a pipeline: its steps)."""
        return {}

    def _initial_messages(self) -> list[dict[str, Any]]:
        system = self.spec.system_prompt or default_system_prompt(self.servers)
        if self.spec.messages:
            has_system = any(m.get("role") == "system" for m in self.spec.messages)
            return ([] if has_system else [{"role": "system", "content": system}]) + list(self.spec.messages)
        return [{"role": "system", "content": system}, {"role": "user", "content": self.spec.task}]

    async def _loop(self, emit: Emit) -> tuple[RunStatus, str]:
        messages = self._initial_messages()
        offered = [] if self.spec.tool_choice == "none" else self.tools.openai_tools() + self.spec.client_tools
        offered_names = {t["function"]["name"] for t in offered}
        while True:
            if self.rounds >= self.max_rounds:
                return "max_rounds", await self._final_answer(messages, emit, FINAL_ANSWER_PROMPT)
            round_no = self.rounds + 1
            await emit(RunEvent.ROUND_STARTED, {"round": round_no, "tools": bool(offered)})
            # the request's tool_choice applies to the first round only: a forced call cannot loop forever
            choice = self.spec.tool_choice if self.rounds == 0 else None
            answer = await self._chat(messages, offered or None, tool_choice=choice)
            await self._read(answer, round_no, offered_names, emit)
            if answer.content:
                self._last_text = answer.content
                await emit(RunEvent.MESSAGE, {"round": round_no, "content": answer.content})
            if answer.finish_reason == "length":
                return "length", self._cut_at_token_limit(answer)
            if not answer.tool_calls:
                return "completed", answer.content or ""
            mine = [c for c in answer.tool_calls if c.name in self._client_tool_names]
            if mine:  # the client runs its own tools: hand the calls back (MCP calls of this answer are dropped)
                self.client_calls = [_wire_call(c) for c in mine]
                return "completed", answer.content or ""
            if self._repeats(answer.tool_calls):
                self.warnings.append(
                    f"The model repeated the same tool call {self.service.defaults.repeat_call_limit} times in a row; "
                    "the run was ended with one last call without tools"
                )
                return "loop", await self._final_answer(messages, emit, REPEATED_CALL_PROMPT)
            self.rounds += 1
            messages.append(
                {
                    "role": "assistant",
                    "content": answer.content,
                    "tool_calls": [_wire_call(c) for c in answer.tool_calls],
                }
            )
            steps = await asyncio.gather(*(self._call(self.rounds, c, emit) for c in answer.tool_calls))
            for step in steps:
                messages.append({"role": "tool", "tool_call_id": step.tool_call_id, "content": step.output})

    async def _read(self, answer: ChatResult, round_no: int, offered: set[str], emit: Emit) -> None:
        """Keep the round's reasoning apart; recover tool calls the model wrote as text."""
        if answer.reasoning:
            self.reasoning.append(RoundReasoning(round_no, answer.reasoning))
            await emit(RunEvent.REASONING, {"round": round_no, "content": answer.reasoning})
        if offered and self.service.defaults.text_tool_calls:
            found = recover_text_calls(answer, offered, round_no)
            if found:
                self.service.metrics.text_tool_calls.labels(found).inc(len(answer.tool_calls))

    async def _final_answer(self, messages: list[dict[str, Any]], emit: Emit, prompt: str) -> str:
        """One last call WITHOUT tools: the best answer from what was gathered."""
        messages.append({"role": "user", "content": prompt})
        await emit(RunEvent.ROUND_STARTED, {"round": self.rounds + 1, "tools": False})
        answer = await self._chat(messages, None)
        await self._read(answer, self.rounds + 1, set(), emit)
        if answer.finish_reason == "length":
            self._cut_at_token_limit(answer)
        text = answer.content or self._gathered("The run ended before a final answer.")
        await emit(RunEvent.MESSAGE, {"round": self.rounds + 1, "content": text})
        return text

    def _cut_at_token_limit(self, answer: ChatResult) -> str:
        limit = self.spec.max_tokens or self.service.defaults.max_tokens
        self.warnings.append(
            f"The model hit its token limit (max_tokens {limit} or the context length); the answer is cut off"
        )
        return answer.content or self._gathered("The model hit its token limit.")

    def _repeats(self, calls: list[ToolCall]) -> bool:
        """True once the same call (name and arguments) has come `repeat_call_limit` times in a row."""
        for call in calls:
            signature = (call.name, call.arguments.strip())
            self._same_calls = self._same_calls + 1 if signature == self._last_call else 1
            self._last_call = signature
            if self._same_calls >= self.service.defaults.repeat_call_limit:
                return True
        return False

    async def _chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        tool_choice: ToolChoice | None = None,
    ) -> ChatResult:
        payload: dict[str, Any] = {**self.spec.extra_body, "model": self.model.id, "messages": messages}
        if tools:
            payload["tools"] = tools
            if tool_choice is not None:
                payload["tool_choice"] = tool_choice
        payload["max_tokens"] = self.spec.max_tokens or self.service.defaults.max_tokens
        if self.spec.temperature is not None:
            payload["temperature"] = self.spec.temperature
        first_load = not self.model.info.loaded and self.usage.total_tokens == 0
        timeout_s = self.service.defaults.load_timeout_s if first_load else None
        result = await self.service.lmstudio.chat(payload, timeout_s=timeout_s, deadline=self.deadline)
        if first_load and self.service.lmstudio.reports_load_state:
            # LM Studio JIT-loaded it (Auto-Evict may have unloaded another): the list's states are out of date
            self.service.catalog.invalidate()
        self.usage.add(result.usage)
        for failure in result.failovers:
            self.warnings.append(f"LM Studio host {failure}; the call went to host {result.host!r}")
        if result.model and result.model != self.model.id and result.model != self.answered_model:
            self.answered_model = result.model
            self.warnings.append(
                f"LM Studio answered with model {result.model!r} although {self.model.id!r} was requested"
            )
        return result

    @property
    def key_label(self) -> str:
        """The API key's name for metrics: configured names only (bounded), `(none)` without keys."""
        return self.spec.access.name if self.spec.access is not None else "(none)"

    async def _call(self, round_no: int, call: ToolCall, emit: Emit) -> Step:
        self.service.metrics.key_tool_calls.labels(self.key_label).inc()
        step = await run_tool_call(self.service.pool, self.tools, round_no, call, emit, self._max_chars, self._approve)
        self.steps.append(step)
        return step

    async def _approve(self, call_id: str, spec: ToolSpec, arguments: Any) -> Decision | None:
        """None when the tool needs no approval; else a person's decision (async runs) or a denial."""
        if not self.service.approvals.needs(spec.server, spec.name):
            return None
        name = spec.model_name
        if not self.spec.interactive:
            self.warnings.append(
                f"The model called {name}, which needs a person's approval; a synchronous run cannot wait for one, "
                "so the call was denied (start the run with POST /v1/runs to approve calls)"
            )
            return Decision("denied", "it needs a person's approval, which this run cannot ask for")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self.set_status("awaiting_approval")
        request = {"tool_call_id": call_id, "name": name, "server": spec.server, "tool": spec.name}
        await self._emit(RunEvent.APPROVAL_REQUESTED, {**request, "arguments": arguments})
        timeout_s = self.service.defaults.approval_timeout_s
        asked = time.monotonic()
        try:
            decision = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            decision = Decision("timed_out", f"no decision within {timeout_s:g} s")
        finally:
            del self.pending[call_id]
            if not self.pending:
                self.set_status("running")
            self._extend_deadline(time.monotonic() - asked)
        decided = {**request, "decision": decision.verdict, "reason": decision.reason}
        await self._emit(RunEvent.APPROVAL_DECIDED, decided)
        return decision

    def _extend_deadline(self, waited_s: float) -> None:
        """Time spent waiting for a person does not count against the run's deadline (nor its pipeline's)."""
        if self.parent is not None:
            self.parent._extend_deadline(waited_s)
        self.deadline += waited_s
        when = self._timeout.when() if self._timeout is not None else None
        if self._timeout is not None and when is not None:
            self._timeout.reschedule(when + waited_s)

    def _gathered(self, reason: str) -> str:
        """Best output available when the run ends without a final answer."""
        if self._last_text:
            return self._last_text
        results = [f"- {s.name}: {s.output}" for s in self.steps if not s.is_error]
        if not results:
            return f"{reason} No tool results were gathered."
        return f"{reason} Tool results gathered so far:\n" + "\n".join(results)


async def _no_emit(event: str, data: dict[str, Any]) -> None:
    return None


def _wire_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": scrub(call.arguments)}}
