"""The loop policy of a run: ask the model, run the tools it calls, feed the results back, and end honestly
(`completed`, `max_rounds`, `length`, `loop`, or the client's own tools handed back)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from services.agent import resource_tools
from services.agent.aids import LOOP_HINT_WARNING, NUDGE_WARNING, loop_hint_text, nudge_due
from services.agent.answers import recover_text_calls
from services.agent.builtin_tools import FIND_TOOLS, READ_OUTPUT
from services.agent.context import RunContext
from services.agent.fitting import RunFitting
from services.agent.gate import ApprovalGate
from services.agent.model_call import ModelCaller
from services.agent.prompts import FINAL_ANSWER_PROMPT, REPEATED_CALL_PROMPT, default_system_prompt, truncate
from services.agent.records import RoundReasoning, RunEvent, RunStatus, Step, ToolChoice
from services.agent.resource_tools import RESOURCE_TOOLS, offered_resources
from services.agent.state import RunState
from services.agent.tool_steps import answered_step, run_tool_call
from services.context.fit import Fit, strip_marks, tool_name
from services.errors import ContextExceededError
from services.lmstudio import ChatResult, ToolCall
from services.text import scrub


class AgentLoop:
    """Rounds of one run until an ending; `max_rounds` counts rounds that called tools."""

    def __init__(
        self, ctx: RunContext, run: RunState, caller: ModelCaller, gate: ApprovalGate, max_rounds: int
    ) -> None:
        self._ctx = ctx
        self._run = run
        self._caller = caller
        self._gate = gate
        self.max_rounds = max_rounds
        self._client_tool_names = {t.get("function", {}).get("name") for t in run.spec.client_tools}
        self._last_call: tuple[str, str] | None = None
        self._same_calls = 0
        self._requested_tokens = caller.max_tokens
        self._resource_servers: list[str] = []  # the run's servers whose resources the model may list and read
        self._fit = RunFitting(
            run,
            ctx.defaults.context,
            ctx.catalog.window_of(run.model.id).tokens,
            ctx.tokens,
            run.emit,
            lambda action: ctx.metrics.child(ctx.metrics.context_fits, action).inc(),
        )
        self._keep_head = 0  # messages never compacted: the system prompt and the task (or the conversation)
        self._keep_from = 0  # where the last round starts
        self._aids = run.spec.aids or ctx.defaults.aids.for_model(run.model.id)
        self._hinted: tuple[int, set[str]] | None = None  # (round, ids) of the calls answered with the loop hint

    async def run(self) -> tuple[RunStatus, str]:
        try:
            return await self._rounds()
        except ContextExceededError as exc:
            self._run.exceeded = exc
            metrics = self._ctx.metrics
            metrics.child(metrics.context_fits, "exceeded").inc()
            self._run.warnings.append(f"The context window was exceeded: {exc.detail}")
            return "context_exceeded", self._run.gathered(
                f"The request could not fit the model's context window: {exc.detail}."
            )

    async def _rounds(self) -> tuple[RunStatus, str]:
        run, emit = self._run, self._run.emit
        messages = self._initial_messages()
        self._keep_head = self._keep_from = len(messages)
        offered: list[dict[str, Any]] = []
        if run.spec.tool_choice != "none":
            found, self._resource_servers = await offered_resources(self._ctx.pool, run.servers, run.spec.allowed_tools)
            tools = run.tools.openai_tools() + found + run.spec.client_tools
            offered = await self._fit.offer(tools, self._query(messages), self._answer_tokens())
        while True:
            if run.rounds >= self.max_rounds:
                text, cut = await self._final_answer(messages, FINAL_ANSWER_PROMPT)
                return ("length" if cut else "max_rounds"), text
            if offered:
                offered = self._fit.next_offer()
            offered_names = {tool_name(t) for t in offered}
            round_no = run.rounds + 1
            await emit(RunEvent.ROUND_STARTED, {"round": round_no, "tools": bool(offered)})
            # the request's tool_choice applies to the first round only: a forced call cannot loop forever
            choice = run.spec.tool_choice if run.rounds == 0 else None
            answer, messages = await self._ask(messages, offered, round_no, choice)
            raw = await self._read(answer, round_no, offered_names)
            if nudge_due(self._aids, run.rounds, len(answer.tool_calls), bool(offered), choice):
                run.warnings.append(NUDGE_WARNING)  # the aid `nudge`: asked again, a call forced
                answer, messages = await self._ask(messages, offered, round_no, "required")
                raw = await self._read(answer, round_no, offered_names)
            ending = await self._ending(answer, messages, round_no, choice, raw)
            if ending is not None:
                return ending
            run.rounds += 1
            messages = await self._call_round(messages, answer, offered, offered_names)

    async def _ending(
        self,
        answer: ChatResult,
        messages: list[dict[str, Any]],
        round_no: int,
        choice: ToolChoice | None,
        raw: str | None,
    ) -> tuple[RunStatus, str] | None:
        """How the run ends with this answer, or None when it goes on with the calls it made. `raw`: the answer's
        text before calls written in it were taken out."""
        run = self._run
        if answer.content:
            run.last_text = answer.content
            await run.emit(RunEvent.MESSAGE, {"round": round_no, "content": answer.content})
        if choice == "required" and not answer.tool_calls:
            run.warnings.append('tool_choice "required" was asked for, but the model made no tool call')
        if answer.finish_reason == "length":
            if answer.tool_calls and all(_complete(c) for c in answer.tool_calls):
                run.warnings.append("The answer was cut at the token limit after complete tool call(s); they were run")
                return None
            if answer.tool_calls:  # a cut call is never run, and never hidden: the text stays the output
                answer.content = raw
                run.warnings.append("The answer was cut at the token limit inside a tool call; the call was not run")
            return "length", self._cut_at_token_limit(answer)
        if not answer.tool_calls:
            return "completed", answer.content or ""
        mine = [c for c in answer.tool_calls if c.name in self._client_tool_names]
        if mine:  # the client runs its own tools: hand the calls back (MCP calls of this answer are dropped)
            run.client_calls = [_wire_call(c) for c in mine]
            return "completed", answer.content or ""
        if self._repeats(answer.tool_calls):
            if self._aids.loop_hint and self._hinted is None:  # the aid `loop_hint`: told once, then it goes on
                self._hinted = (round_no, {c.id for c in answer.tool_calls})
                run.warnings.append(LOOP_HINT_WARNING)
                return None
            run.warnings.append(
                f"The model repeated the same tool call {self._ctx.defaults.repeat_call_limit} times in a row; "
                "the run was ended with one last call without tools"
            )
            text, cut = await self._final_answer(messages, REPEATED_CALL_PROMPT)
            return ("length" if cut else "loop"), text
        return None

    async def _call_round(
        self, messages: list[dict[str, Any]], answer: ChatResult, offered: list[dict[str, Any]], names: set[str]
    ) -> list[dict[str, Any]]:
        """The answer's calls run, and their outputs (cut to BRIDGE_TOOL_OUTPUT_MAX_CHARS, then fitted to the
        window) appended after it as tool messages; the record keeps each whole output."""
        run = self._run
        calls = answer.tool_calls
        for call in calls:
            if call.recovered_from:  # written as text and recovered: counted now that it runs
                metrics = self._ctx.metrics
                metrics.child(metrics.text_tool_calls, call.recovered_from).inc()
        messages.append({"role": "assistant", "content": answer.content, "tool_calls": [_wire_call(c) for c in calls]})
        steps = await self._call_all(run.rounds, calls, names)
        limit = self._ctx.defaults.tool_output_max_chars
        results = [(s.tool_call_id, s.name, truncate(s.output, limit)) for s in steps]
        whole = {s.tool_call_id: s.output for s in steps}
        messages, contents = await self._fit.fit_outputs(
            messages, offered, results, whole, self._keep_head, run.rounds, self._answer_tokens()
        )
        self._keep_from = len(messages) - 1
        for step, content in zip(steps, contents, strict=True):
            messages.append({"role": "tool", "tool_call_id": step.tool_call_id, "content": content})
        return messages

    def _answer_tokens(self) -> int:
        """max_tokens of the next request: the run's, clamped to its share of the window."""
        return self._fit.answer_tokens(self._requested_tokens)

    def _query(self, messages: list[dict[str, Any]]) -> str:
        """What the tools are ranked against: the task (the conversation's last user text)."""
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else self._run.spec.task

    async def _ask(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], round_no: int, choice: ToolChoice | None
    ) -> tuple[ChatResult, list[dict[str, Any]]]:
        """One LM Studio call with the messages fitted to the window (compacted when they do not fit). An engine
        that says its window is smaller than known (`n_ctx`), or counted more prompt tokens than the window
        holds, gets the request fitted again, once; otherwise its overflow ends the run (`context_exceeded`)."""
        fit = self._fit
        retried = False
        while True:
            self._caller.max_tokens = self._answer_tokens()
            messages, estimated = await fit.prepare(
                messages, tools, self._keep_head, self._keep_from, round_no, self._caller.max_tokens
            )
            started = time.perf_counter()
            try:
                answer = await self._caller.ask(strip_marks(messages), tools or None, choice)
            except ContextExceededError as exc:
                if retried or exc.n_ctx is None:
                    raise
                await self._learn(exc, estimated, round_no)
                retried = True
                continue
            prompt_tokens = answer.usage.prompt_tokens
            if prompt_tokens:
                fit.observe(estimated, prompt_tokens)
            if prompt_tokens > fit.window:
                if retried:
                    raise ContextExceededError(
                        f"The engine counted {prompt_tokens} prompt tokens, more than the {fit.window}-token window",
                        n_ctx=fit.window,
                        n_prompt=prompt_tokens,
                        shape="usage",
                    )
                retried = True
                continue  # the estimate has just been calibrated: fitted again, sent again
            await self._run.emit(RunEvent.MODEL_ANSWERED, answered(round_no, answer, started, self._run.model.id))
            return answer, messages

    async def _learn(self, exc: ContextExceededError, estimated: int, round_no: int) -> None:
        """What an overflow answer says: the engine's window (n_ctx) and its count of the prompt (n_prompt; without
        it, the estimate was too low by at least the margin)."""
        fit = self._fit
        fit.observe(estimated, exc.n_prompt or int(estimated * 1.25))
        window = self._ctx.catalog.learn_window(self._run.model.id, exc.n_ctx or fit.window).tokens
        detail = (
            f"the engine refused the request ({exc.shape}): its window is {window} tokens, {fit.window} was assumed"
        )
        await fit.record(Fit(round_no, "window", fit.window, window, detail))
        fit.window = window

    def _initial_messages(self) -> list[dict[str, Any]]:
        spec = self._run.spec
        system = spec.system_prompt or default_system_prompt(self._run.servers)
        if spec.messages:
            has_system = any(m.get("role") == "system" for m in spec.messages)
            return ([] if has_system else [{"role": "system", "content": system}]) + list(spec.messages)
        return [{"role": "system", "content": system}, {"role": "user", "content": spec.task}]

    async def _read(self, answer: ChatResult, round_no: int, offered: set[str]) -> str | None:
        """Keep the round's reasoning apart; recover tool calls the model wrote as text (counted once they run).
        Returns the answer's text as it came."""
        raw = answer.content
        if answer.reasoning:
            self._run.reasoning.append(RoundReasoning(round_no, answer.reasoning))
            await self._run.emit(RunEvent.REASONING, {"round": round_no, "content": answer.reasoning})
        if offered and self._ctx.defaults.text_tool_calls:
            recover_text_calls(answer, offered, round_no)
        return raw

    async def _final_answer(self, messages: list[dict[str, Any]], prompt: str) -> tuple[str, bool]:
        """One last call WITHOUT tools: the best answer from what was gathered, and whether it was cut at the
        token limit."""
        run = self._run
        self._keep_from = len(messages)
        messages.append({"role": "user", "content": prompt})
        await run.emit(RunEvent.ROUND_STARTED, {"round": run.rounds + 1, "tools": False})
        answer, _ = await self._ask(messages, [], run.rounds + 1, None)
        await self._read(answer, run.rounds + 1, set())
        cut = answer.finish_reason == "length"
        if cut:
            self._cut_at_token_limit(answer)
        text = answer.content or run.gathered("The run ended before a final answer.")
        await run.emit(RunEvent.MESSAGE, {"round": run.rounds + 1, "content": text})
        return text, cut

    def _cut_at_token_limit(self, answer: ChatResult) -> str:
        self._run.warnings.append(
            f"The model hit its token limit (max_tokens {self._caller.max_tokens} or the context length); "
            "the answer is cut off"
        )
        return answer.content or self._run.gathered("The model hit its token limit.")

    def _repeats(self, calls: list[ToolCall]) -> bool:
        """True once the same call (name and arguments) has come `repeat_call_limit` times in a row."""
        for call in calls:
            signature = (call.name, call.arguments.strip())
            self._same_calls = self._same_calls + 1 if signature == self._last_call else 1
            self._last_call = signature
            if self._same_calls >= self._ctx.defaults.repeat_call_limit:
                return True
        return False

    async def _call_all(self, round_no: int, calls: list[ToolCall], offered: set[str]) -> list[Step]:
        """The round's calls, run concurrently; their steps are recorded in the order the model made the calls,
        also those that finished when the run is stopped halfway."""
        done: list[Step | None] = [None] * len(calls)

        async def call(index: int, tool_call: ToolCall) -> None:
            metrics = self._ctx.metrics
            metrics.child(metrics.key_tool_calls, self._run.key_label).inc()
            name, fit, emit = tool_call.name, self._fit, self._run.emit
            if name == FIND_TOOLS and name in offered:
                done[index] = await answered_step(round_no, tool_call, emit, fit.find_tools(tool_call.arguments))
            elif name == READ_OUTPUT and name in offered:
                done[index] = await answered_step(round_no, tool_call, emit, fit.read_output(tool_call.arguments))
            elif name in RESOURCE_TOOLS and name in offered:
                output = await resource_tools.answer(self._ctx.pool, self._resource_servers, name, tool_call.arguments)
                done[index] = await answered_step(round_no, tool_call, emit, output)
            elif fit.is_hidden(name):  # never run without being offered
                done[index] = await answered_step(round_no, tool_call, emit, fit.not_offered(name))
            elif self._hinted is not None and self._hinted[0] == round_no and tool_call.id in self._hinted[1]:
                hint = loop_hint_text(tool_call, self._run.steps, self._same_calls)
                done[index] = await answered_step(round_no, tool_call, emit, hint)
            else:
                done[index] = await run_tool_call(
                    self._ctx.pool, self._run.tools, round_no, tool_call, emit, self._gate.ask, self._aids.repair
                )

        try:
            if len(calls) == 1:  # awaited in this task: gather would wrap the one call in a task of its own
                await call(0, calls[0])
            else:
                await asyncio.gather(*(call(i, c) for i, c in enumerate(calls)))
        finally:
            steps = [step for step in done if step is not None]
            self._run.steps.extend(steps)
        return steps


def _complete(call: ToolCall) -> bool:
    """A call of an answer cut at the token limit that was written whole: its arguments a JSON object as written
    (not repaired); a cut one is never run nor sent back (engines refuse arguments that are not JSON)."""
    if call.repaired:
        return False
    try:
        return isinstance(json.loads(call.arguments or "{}"), dict)
    except ValueError:
        return False


def _wire_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": scrub(call.arguments)}}


def answered(round_no: int, answer: ChatResult, started: float, asked: str) -> dict[str, Any]:
    """The `model.answered` event of one LM Studio call (`started`: its perf_counter start; `asked`: the model
    requested, named when the answer does not say)."""
    return {
        "round": round_no,
        "model": answer.model or asked,
        "host": answer.host,
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "finish_reason": answer.finish_reason,
        "tool_calls": len(answer.tool_calls),
        "failovers": answer.failovers,
    }
