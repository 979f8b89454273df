"""The agent loop: a model in LM Studio carries out a task by calling MCP tools.

`AgentService.open(spec)` validates everything that can fail before a run starts (model, servers,
tools, a free run slot) and returns a `Run`; `Run.execute(emit)` carries it out. The split lets
the HTTP layer answer early failures with a problem document and stream everything after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from services.catalog import ModelCatalog, ResolvedModel
from services.errors import (
    BridgeError,
    InvalidRequestError,
    MCPServerError,
    ShuttingDownError,
)
from services.limits import RunLimiter
from services.lmstudio import ChatResult, LMStudioClient, Usage
from services.mcp_pool import MCPPool, ToolCatalog, ToolSpec
from services.metrics import Metrics
from services.tool_args import coerce_arguments, validate_arguments
from services.tracing import clip, current_run_id, trace_id, tracer

log = logging.getLogger("lmstudio_bridge.agent")
RunStatus = Literal["completed", "max_rounds", "timeout", "cancelled"]
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]

MAX_ROUNDS_CAP = 100
TRUNCATION_MARKER = "\n[... output truncated by lmstudio-bridge: {omitted} of {total} characters omitted ...]"
FINAL_ANSWER_PROMPT = (
    "You have used all the tool rounds this task allows. Do not call tools. Using only the tool results "
    "above, give your best final answer to the task now."
)


def default_system_prompt(servers: list[str]) -> str:
    listing = ", ".join(servers) if servers else "none"
    return (
        "You are a capable assistant. You carry out the user's task by calling tools when they help. "
        f"Tools come from these MCP servers: {listing}; a tool named <server>__<tool> belongs to <server>. "
        "Base your answer on the tool results; do not invent them. When you have the answer, reply "
        "without calling tools."
    )


@dataclass(slots=True)
class RunSpec:
    """What a client asks for; `messages` (a chat conversation) replaces `task` when given."""

    task: str
    mcp_servers: list[str] | None = None
    model: str | None = None
    max_rounds: int = 10
    max_tokens: int | None = None
    temperature: float | None = None
    system_prompt: str | None = None
    allowed_tools: list[str] | None = None
    timeout_s: float | None = None
    messages: list[dict[str, Any]] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)  # passed to LM Studio as is (e.g. ttl)
    client_tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function tools the CLIENT runs


@dataclass(slots=True)
class Step:
    round: int
    tool_call_id: str
    name: str
    server: str | None
    tool: str | None
    arguments: Any
    output: str
    is_error: bool
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-ready data (shallow: `dataclasses.asdict` would deep-copy the arguments)."""
        return {name: getattr(self, name) for name in STEP_FIELDS}


STEP_FIELDS = tuple(f.name for f in fields(Step))


@dataclass(slots=True)
class RunResult:
    run_id: str
    status: RunStatus
    output: str
    model: str
    mcp_servers: list[str]
    rounds: int
    steps: list[Step]
    usage: Usage
    duration_ms: float
    trace_id: str | None
    warnings: list[str] = field(default_factory=list)
    # calls of the client's own function tools, handed back unexecuted (OpenAI-compatible endpoint)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (built by hand: `asdict` deep-copies every step's arguments)."""
        data = {name: getattr(self, name) for name in RESULT_FIELDS}
        data["steps"] = [step.to_dict() for step in self.steps]
        data["usage"] = {
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "total_tokens": self.usage.total_tokens,
        }
        return data


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(omitted=len(text) - limit, total=len(text))


class AgentService:
    """Builds and runs agent runs over one LM Studio client, model catalog and MCP pool."""

    def __init__(
        self,
        lmstudio: LMStudioClient,
        catalog: ModelCatalog,
        pool: MCPPool,
        limiter: RunLimiter,
        *,
        run_timeout_s: float = 300.0,
        tool_output_max_chars: int = 20_000,
        load_timeout_s: float | None = None,
        metrics: Metrics | None = None,
        capture_content: bool = False,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.capture_content = capture_content
        self.lmstudio = lmstudio
        self.catalog = catalog
        self.pool = pool
        self.limiter = limiter
        self.run_timeout_s = run_timeout_s
        self.tool_output_max_chars = tool_output_max_chars
        self.load_timeout_s = load_timeout_s
        self.accepting = True
        self.active: set[Run] = set()

    async def drain(self, grace_s: float) -> None:
        """Refuse new runs, give runs in flight `grace_s` to finish, then stop them."""
        self.accepting = False
        tasks = {run.task for run in self.active if run.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self.active):
            run.stop_for_shutdown()
        tasks = {run.task for run in self.active if run.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def open(self, spec: RunSpec) -> Run:
        """Validate the spec and take a run slot; raises before anything runs."""
        if not self.accepting:
            raise ShuttingDownError("The gateway is shutting down; retry on another instance", retry_after=5)
        if not 1 <= spec.max_rounds <= MAX_ROUNDS_CAP:
            raise InvalidRequestError(f"max_rounds must be between 1 and {MAX_ROUNDS_CAP}")
        if self.lmstudio.breaker is not None:
            self.lmstudio.breaker.check()  # LM Studio is known to be down: fail in milliseconds
        model = await self.catalog.resolve(spec.model)
        servers, tools, warnings = await self._tools_for(spec)
        await self.limiter.acquire()
        if model.stale:
            warnings.append("LM Studio did not answer the model list; the model was checked against the last list")
        return Run(self, spec, model, servers, tools, warnings)

    async def _tools_for(self, spec: RunSpec) -> tuple[list[str], ToolCatalog, list[str]]:
        warnings: list[str] = []
        if spec.mcp_servers is not None:
            servers = list(dict.fromkeys(spec.mcp_servers))
            tools = await self.pool.catalog(servers)  # unknown name -> 422, cannot start -> 503
        else:  # every enabled server, started together; one that cannot start is left out, not fatal
            names = self.pool.names()
            listed = await asyncio.gather(*(self.pool.list_tools(n) for n in names), return_exceptions=True)
            servers = []
            for name, outcome in zip(names, listed, strict=True):
                if isinstance(outcome, MCPServerError):
                    warnings.append(f"MCP server {name!r} left out: {outcome.detail}")
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    servers.append(name)
            tools = await self.pool.catalog(servers)
        if spec.allowed_tools is not None:
            known = {t.model_name for t in tools.tools}
            unknown = [name for name in spec.allowed_tools if name not in known]
            if unknown:
                raise InvalidRequestError(
                    f"allowed_tools names tools the chosen servers do not have: {', '.join(unknown)}",
                    unknown_tools=unknown,
                    available_tools=sorted(known),
                )
            allowed = set(spec.allowed_tools)
            tools = ToolCatalog([t for t in tools.tools if t.model_name in allowed])
        return servers, tools, warnings


class Run:
    """One run, opened (slot held) by `AgentService.open`; `execute` releases the slot."""

    def __init__(
        self,
        service: AgentService,
        spec: RunSpec,
        model: ResolvedModel,
        servers: list[str],
        tools: ToolCatalog,
        warnings: list[str],
    ) -> None:
        self.service = service
        self.spec = spec
        self.model = model
        self.servers = servers
        self.tools = tools
        self.run_id = f"run_{uuid.uuid4().hex[:24]}"
        self.steps: list[Step] = []
        self.usage = Usage()
        self.rounds = 0
        self.warnings = warnings
        self.answered_model = model.id
        self._released = False
        self._last_text = ""
        self.client_calls: list[dict[str, Any]] = []
        self.task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._client_tool_names = {t.get("function", {}).get("name") for t in spec.client_tools}

    def release(self) -> None:
        """Give the run slot back (idempotent); `execute` does it itself."""
        if not self._released:
            self._released = True
            self.service.limiter.release()

    def stop_for_shutdown(self) -> None:
        """Cancel the run because the gateway stops; `execute` then raises ShuttingDownError."""
        if self.task is not None and not self.task.done():
            self._stopping = True
            self.task.cancel()

    async def execute(self, emit: Emit | None = None) -> RunResult:
        """Carry out the run. Cancelling the calling task cancels the LM Studio call and tool calls."""
        self.task = asyncio.current_task()
        self.service.active.add(self)
        current_run_id.set(self.run_id)
        attributes = {
            "bridge.run_id": self.run_id,
            "gen_ai.request.model": self.model.id,
            "bridge.mcp_servers": self.servers,
            "gen_ai.operation.name": "invoke_agent",
        }
        if self.service.capture_content:
            attributes["bridge.task"] = clip(self.spec.task)
        started, status = time.monotonic(), "failed"
        try:
            with tracer.start_as_current_span("agent.run", attributes=attributes) as span:
                result = await self._execute(emit)
                status = result.status
                span.set_attributes(
                    {"bridge.status": status, "bridge.rounds": result.rounds, "gen_ai.response.model": result.model}
                )
                if self.service.capture_content:
                    span.set_attribute("bridge.output", clip(result.output))
                log.info(
                    "run finished: %s after %d round(s), %d tool call(s), %d tokens, %.0f ms",
                    status,
                    result.rounds,
                    len(result.steps),
                    result.usage.total_tokens,
                    result.duration_ms,
                )
                return result
        except asyncio.CancelledError:
            status = "cancelled"
            if not self._stopping or self.task is None:
                raise
            self.task.uncancel()
            raise ShuttingDownError(
                f"The gateway shut down while run {self.run_id} was in progress", retry_after=5
            ) from None
        finally:
            self.service.active.discard(self)
            metrics = self.service.metrics
            metrics.runs.labels(status).inc()
            metrics.run_duration.labels(status).observe(time.monotonic() - started)
            metrics.run_rounds.labels(status).observe(self.rounds)

    async def _execute(self, emit: Emit | None) -> RunResult:
        started = time.monotonic()
        timeout_s = self.spec.timeout_s or self.service.run_timeout_s
        deadline = started + timeout_s
        status: RunStatus = "completed"
        output = ""
        emit = emit or _no_emit
        try:
            await emit(
                "run.started",
                {
                    "run_id": self.run_id,
                    "model": self.model.id,
                    "mcp_servers": self.servers,
                    "tools": [t.model_name for t in self.tools.tools],
                },
            )
            try:
                async with asyncio.timeout(timeout_s):
                    status, output = await self._loop(emit, deadline)
            except TimeoutError:
                status, output = "timeout", self._gathered(f"The run reached its {timeout_s:g} s deadline.")
        finally:
            self.release()
        return RunResult(
            run_id=self.run_id,
            status=status,
            output=output,
            model=self.answered_model,
            mcp_servers=self.servers,
            rounds=self.rounds,
            steps=self.steps,
            usage=self.usage,
            duration_ms=round((time.monotonic() - started) * 1000, 2),
            trace_id=trace_id(),
            warnings=self.warnings,
            tool_calls=self.client_calls,
        )

    def _initial_messages(self) -> list[dict[str, Any]]:
        system = self.spec.system_prompt or default_system_prompt(self.servers)
        if self.spec.messages:
            has_system = any(m.get("role") == "system" for m in self.spec.messages)
            return ([] if has_system else [{"role": "system", "content": system}]) + list(self.spec.messages)
        return [{"role": "system", "content": system}, {"role": "user", "content": self.spec.task}]

    async def _loop(self, emit: Emit, deadline: float) -> tuple[RunStatus, str]:
        messages = self._initial_messages()
        offered = self.tools.openai_tools() + self.spec.client_tools
        while True:
            if self.rounds >= self.spec.max_rounds:
                messages.append({"role": "user", "content": FINAL_ANSWER_PROMPT})
                await emit("round.started", {"round": self.rounds + 1, "tools": False})
                answer = await self._chat(messages, None, deadline)
                text = answer.content or self._gathered("The round limit was reached.")
                await emit("message", {"round": self.rounds + 1, "content": text})
                return "max_rounds", text
            await emit("round.started", {"round": self.rounds + 1, "tools": bool(offered)})
            answer = await self._chat(messages, offered or None, deadline)
            if answer.content:
                self._last_text = answer.content
                await emit("message", {"round": self.rounds + 1, "content": answer.content})
            if not answer.tool_calls:
                return "completed", answer.content or ""
            mine = [c for c in answer.tool_calls if c.name in self._client_tool_names]
            if mine:  # the client runs its own tools: hand the calls back (MCP calls of this answer are dropped)
                self.client_calls = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in mine
                ]
                return "completed", answer.content or ""
            self.rounds += 1
            messages.append(
                {
                    "role": "assistant",
                    "content": answer.content,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in answer.tool_calls
                    ],
                }
            )
            steps = await asyncio.gather(
                *(self._call(self.rounds, c.id, c.name, c.arguments, emit) for c in answer.tool_calls)
            )
            for step in steps:
                messages.append({"role": "tool", "tool_call_id": step.tool_call_id, "content": step.output})

    async def _chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, deadline: float
    ) -> ChatResult:
        payload: dict[str, Any] = {**self.spec.extra_body, "model": self.model.id, "messages": messages}
        if tools:
            payload["tools"] = tools
        if self.spec.max_tokens is not None:
            payload["max_tokens"] = self.spec.max_tokens
        if self.spec.temperature is not None:
            payload["temperature"] = self.spec.temperature
        first_load = not self.model.info.loaded and self.usage.total_tokens == 0
        timeout_s = self.service.load_timeout_s if first_load else None
        result = await self.service.lmstudio.chat(payload, timeout_s=timeout_s, deadline=deadline)
        self.usage.add(result.usage)
        if result.model and result.model != self.model.id and result.model != self.answered_model:
            self.answered_model = result.model
            self.warnings.append(
                f"LM Studio answered with model {result.model!r} although {self.model.id!r} was requested"
            )
        return result

    async def _call(self, round_no: int, call_id: str, name: str, raw_args: str, emit: Emit) -> Step:
        spec = self.tools.resolve(name)
        arguments: Any = raw_args
        await emit(
            "tool_call.started",
            {
                "round": round_no,
                "tool_call_id": call_id,
                "name": name,
                "server": spec.server if spec else None,
                "tool": spec.name if spec else None,
                "arguments": _maybe_json(raw_args),
            },
        )
        started = time.monotonic()
        if spec is None:
            output, is_error = self._unknown_tool(name), True
        else:
            arguments, output, is_error = await self._invoke(spec, raw_args)
        step = Step(
            round=round_no,
            tool_call_id=call_id,
            name=name,
            server=spec.server if spec else None,
            tool=spec.name if spec else None,
            arguments=arguments,
            output=output,
            is_error=is_error,
            duration_ms=round((time.monotonic() - started) * 1000, 2),
        )
        self.steps.append(step)
        await emit("tool_call.completed", step.to_dict())
        return step

    def _unknown_tool(self, name: str) -> str:
        names = ", ".join(t.model_name for t in self.tools.tools) or "(none)"
        return f"Error: there is no tool named {name!r}. Available tools: {names}"

    async def _invoke(self, spec: ToolSpec, raw_args: str) -> tuple[Any, str, bool]:
        try:
            parsed = json.loads(raw_args) if raw_args.strip() else {}
        except ValueError as exc:
            return raw_args, f"Error: the arguments are not valid JSON ({exc}). Send a JSON object.", True
        if not isinstance(parsed, dict):
            return parsed, "Error: the arguments must be a JSON object.", True
        args = coerce_arguments(spec.input_schema, parsed)
        violations = validate_arguments(spec.input_schema, args)
        if violations:
            return args, "Error: the arguments do not match the tool's input schema: " + "; ".join(violations), True
        try:
            result = await self.service.pool.call_tool(spec.server, spec.name, args)
        except BridgeError as exc:  # unavailable server, timeout, vanished tool: the model reads why
            return args, f"Error: {exc.detail}", True
        return args, truncate(result.text, self.service.tool_output_max_chars), result.is_error

    def _gathered(self, reason: str) -> str:
        """Best output available when the run ends without a final answer."""
        if self._last_text:
            return self._last_text
        results = [f"- {s.name}: {s.output}" for s in self.steps if not s.is_error]
        if not results:
            return f"{reason} No tool results were gathered."
        return f"{reason} Tool results gathered so far:\n" + "\n".join(results)


RESULT_FIELDS = tuple(f.name for f in fields(RunResult))


def _maybe_json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


async def _no_emit(event: str, data: dict[str, Any]) -> None:
    return None
