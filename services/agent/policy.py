"""The loop policy of a run: ask the model, run the tools it calls, feed the results back, and end honestly
(`completed`, `max_rounds`, `length`, `loop`, or the client's own tools handed back)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.agent.answers import recover_text_calls
from services.agent.context import RunContext
from services.agent.gate import ApprovalGate
from services.agent.model_call import ModelCaller
from services.agent.prompts import FINAL_ANSWER_PROMPT, REPEATED_CALL_PROMPT, default_system_prompt
from services.agent.records import RoundReasoning, RunEvent, RunStatus, Step
from services.agent.state import RunState
from services.agent.tool_steps import run_tool_call
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

    async def run(self) -> tuple[RunStatus, str]:
        run, emit = self._run, self._run.emit
        messages = self._initial_messages()
        offered = [] if run.spec.tool_choice == "none" else run.tools.openai_tools() + run.spec.client_tools
        offered_names = {t["function"]["name"] for t in offered}
        while True:
            if run.rounds >= self.max_rounds:
                return "max_rounds", await self._final_answer(messages, FINAL_ANSWER_PROMPT)
            round_no = run.rounds + 1
            await emit(RunEvent.ROUND_STARTED, {"round": round_no, "tools": bool(offered)})
            # the request's tool_choice applies to the first round only: a forced call cannot loop forever
            choice = run.spec.tool_choice if run.rounds == 0 else None
            answer = await self._caller.ask(messages, offered or None, choice)
            await self._read(answer, round_no, offered_names)
            if answer.content:
                run.last_text = answer.content
                await emit(RunEvent.MESSAGE, {"round": round_no, "content": answer.content})
            if answer.finish_reason == "length":
                return "length", self._cut_at_token_limit(answer)
            if not answer.tool_calls:
                return "completed", answer.content or ""
            mine = [c for c in answer.tool_calls if c.name in self._client_tool_names]
            if mine:  # the client runs its own tools: hand the calls back (MCP calls of this answer are dropped)
                run.client_calls = [_wire_call(c) for c in mine]
                return "completed", answer.content or ""
            if self._repeats(answer.tool_calls):
                run.warnings.append(
                    f"The model repeated the same tool call {self._ctx.defaults.repeat_call_limit} times in a row; "
                    "the run was ended with one last call without tools"
                )
                return "loop", await self._final_answer(messages, REPEATED_CALL_PROMPT)
            run.rounds += 1
            messages.append(
                {
                    "role": "assistant",
                    "content": answer.content,
                    "tool_calls": [_wire_call(c) for c in answer.tool_calls],
                }
            )
            for step in await self._call_all(run.rounds, answer.tool_calls):
                messages.append({"role": "tool", "tool_call_id": step.tool_call_id, "content": step.output})

    def _initial_messages(self) -> list[dict[str, Any]]:
        spec = self._run.spec
        system = spec.system_prompt or default_system_prompt(self._run.servers)
        if spec.messages:
            has_system = any(m.get("role") == "system" for m in spec.messages)
            return ([] if has_system else [{"role": "system", "content": system}]) + list(spec.messages)
        return [{"role": "system", "content": system}, {"role": "user", "content": spec.task}]

    async def _read(self, answer: ChatResult, round_no: int, offered: set[str]) -> None:
        """Keep the round's reasoning apart; recover tool calls the model wrote as text."""
        if answer.reasoning:
            self._run.reasoning.append(RoundReasoning(round_no, answer.reasoning))
            await self._run.emit(RunEvent.REASONING, {"round": round_no, "content": answer.reasoning})
        if offered and self._ctx.defaults.text_tool_calls:
            found = recover_text_calls(answer, offered, round_no)
            if found:
                self._ctx.metrics.text_tool_calls.labels(found).inc(len(answer.tool_calls))

    async def _final_answer(self, messages: list[dict[str, Any]], prompt: str) -> str:
        """One last call WITHOUT tools: the best answer from what was gathered."""
        run = self._run
        messages.append({"role": "user", "content": prompt})
        await run.emit(RunEvent.ROUND_STARTED, {"round": run.rounds + 1, "tools": False})
        answer = await self._caller.ask(messages, None)
        await self._read(answer, run.rounds + 1, set())
        if answer.finish_reason == "length":
            self._cut_at_token_limit(answer)
        text = answer.content or run.gathered("The run ended before a final answer.")
        await run.emit(RunEvent.MESSAGE, {"round": run.rounds + 1, "content": text})
        return text

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

    async def _call_all(self, round_no: int, calls: list[ToolCall]) -> list[Step]:
        """The round's calls, run concurrently; their steps are recorded in the order the model made the calls,
        also those that finished when the run is stopped halfway."""
        done: list[Step | None] = [None] * len(calls)

        async def call(index: int, tool_call: ToolCall) -> None:
            self._ctx.metrics.key_tool_calls.labels(self._run.key_label).inc()
            done[index] = await run_tool_call(
                self._ctx.pool,
                self._run.tools,
                round_no,
                tool_call,
                self._run.emit,
                self._ctx.defaults.tool_output_max_chars,
                self._gate.ask,
            )

        try:
            await asyncio.gather(*(call(i, c) for i, c in enumerate(calls)))
        finally:
            steps = [step for step in done if step is not None]
            self._run.steps.extend(steps)
        return steps


def _wire_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": scrub(call.arguments)}}
