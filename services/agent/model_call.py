"""Each LM Studio request of a run: the payload built from the run's spec, and what the answer says about the run."""

from __future__ import annotations

from typing import Any

from services.agent.context import RunContext
from services.agent.records import ToolChoice
from services.agent.state import RunState
from services.lmstudio import ChatResult


def chat_payload(
    run: RunState,
    max_tokens: int,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tool_choice: ToolChoice | None = None,
) -> dict[str, Any]:
    """The body of one chat completion: the client's extra fields first, the run's own fields over them."""
    payload: dict[str, Any] = {**run.spec.extra_body, "model": run.model.id, "messages": messages}
    if tools:
        payload["tools"] = tools
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
    payload["max_tokens"] = max_tokens
    if run.spec.temperature is not None:
        payload["temperature"] = run.spec.temperature
    return payload


class ModelCaller:
    """Sends a run's chat requests and keeps what each answer says: tokens used, failovers, the model that answered."""

    def __init__(self, ctx: RunContext, run: RunState, max_tokens: int) -> None:
        self._ctx = ctx
        self._run = run
        self.max_tokens = max_tokens
        self.deadline = 0.0  # the run's deadline (monotonic), set when it starts

    async def ask(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_choice: ToolChoice | None = None
    ) -> ChatResult:
        run, ctx = self._run, self._ctx
        payload = chat_payload(run, self.max_tokens, messages, tools, tool_choice)
        first_load = not run.model.info.loaded and run.usage.total_tokens == 0
        timeout_s = ctx.defaults.load_timeout_s if first_load else None
        result = await ctx.lmstudio.chat(payload, timeout_s=timeout_s, deadline=self.deadline)
        if first_load and ctx.lmstudio.reports_load_state:
            # LM Studio JIT-loaded it (Auto-Evict may have unloaded another): the list's states are out of date
            ctx.catalog.invalidate()
        run.usage.add(result.usage)
        for failure in result.failovers:
            run.warnings.append(f"LM Studio host {failure}; the call went to host {result.host!r}")
        if result.model and result.model != run.model.id and result.model != run.answered_model:
            run.answered_model = result.model
            run.warnings.append(
                f"LM Studio answered with model {result.model!r} although {run.model.id!r} was requested"
            )
        return result
