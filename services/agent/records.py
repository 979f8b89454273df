"""What a run is asked to do and what it reports: the one definition of the run's wire types.

The dataclasses are plain (cheap to build in the loop) and are also the HTTP response models:
pydantic reads the `Field` descriptions for the OpenAPI document and serialises them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, get_args

from pydantic import Field, TypeAdapter
from pydantic_core import PydanticSerializationError

from services.access import Access
from services.agent.approvals import Asker
from services.context.fit import Fit
from services.lmstudio import Usage

# How a run ended (length: the model hit its token limit; loop: it repeated the same tool call;
# failed: an error ended it; context_exceeded: the request could not be fitted to the model's context window
# (docs/context.md); interrupted: the gateway stopped or restarted under it), or where a
# stored run is now (queued for a run slot, running, awaiting a person's approval of a tool call).
RunStatus = Literal[
    "completed",
    "max_rounds",
    "timeout",
    "cancelled",
    "length",
    "loop",
    "failed",
    "context_exceeded",
    "interrupted",
    "queued",
    "running",
    "awaiting_approval",
]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
UNFINISHED_STATUSES: frozenset[str] = frozenset({"queued", "running", "awaiting_approval"})
FINISHED_STATUSES: frozenset[str] = frozenset(RUN_STATUSES) - UNFINISHED_STATUSES


# OpenAI's tool_choice: a mode, or {"type": "function", "function": {"name": "<server>__<tool>"}}
ToolChoice = Literal["auto", "required", "none"] | dict[str, Any]


class RunEvent(StrEnum):
    """Names of a run's progress events (SSE `event:`, MCP progress), in the order they can occur."""

    STARTED = "run.started"
    ROUND_STARTED = "round.started"
    MODEL_ANSWERED = "model.answered"  # one LM Studio call ended: model, host, tokens, duration, finish reason
    REASONING = "reasoning"  # the model's reasoning of a round, kept out of `message` and `output`
    TOOL_CALL_STARTED = "tool_call.started"
    TOOL_CALL_COMPLETED = "tool_call.completed"
    MESSAGE = "message"
    CONTEXT_FITTED = "context.fitted"  # the request was fitted to the model's window: what, tokens before/after
    APPROVAL_REQUESTED = "approval.requested"  # a tool call waits for a person's decision
    APPROVAL_DECIDED = "approval.decided"  # approved, denied, or denied when nobody answered in time
    STEP_STARTED = "step.started"  # pipelines: a step begins (its run's events follow, each with `stage`)
    STEP_COMPLETED = "step.completed"  # pipelines: a step ended; data = its run record
    COMPLETED = "run.completed"  # terminal: data = the run result
    FAILED = "run.failed"  # terminal: data = a problem document


# how a run reports its progress events (event name, JSON-ready data)
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]

PROGRESS_EVENTS = tuple(e for e in RunEvent if e not in (RunEvent.COMPLETED, RunEvent.FAILED))
TERMINAL_EVENTS = (RunEvent.COMPLETED, RunEvent.FAILED)


class Journal(Protocol):
    """Where a run's life is written down (the run store); every call returns at once."""

    def status(self, status: RunStatus) -> None:
        """The run is now queued, running or awaiting approval."""

    def event(self, seq: int, event: str, data: dict[str, Any]) -> None:
        """Progress event number `seq` (1, 2, ...) of the run."""

    def text(self, seq: int, data: dict[str, Any]) -> str | None:
        """The JSON text kept for event `seq` if its data is `data` (made once, for the store and the run's own
        stream); None otherwise."""

    def finished(self, seq: int, status: RunStatus, result: RunResult | None, problem: dict[str, Any] | None) -> None:
        """The terminal event `seq`: `run.completed` with the result, or `run.failed` with a problem."""


@dataclass(slots=True)
class RunSpec:
    """What a client asks for; `messages` (a chat conversation) replaces `task` when given.
    Unset limits (None) take the gateway's settings."""

    task: str
    mcp_servers: list[str] | None = None
    model: str | None = None
    max_rounds: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    system_prompt: str | None = None
    allowed_tools: list[str] | None = None
    timeout_s: float | None = None
    tool_choice: ToolChoice | None = None  # first round only; "none" offers no tools
    messages: list[dict[str, Any]] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)  # passed to LM Studio as is (e.g. ttl)
    client_tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function tools the CLIENT runs
    store: bool = True  # recorded in the run store
    interactive: bool = False  # tool calls that need approval wait for a person (async runs); else denied
    asker: Asker | None = None  # an interactive run's client, asked directly too (the MCP front door's elicitation)
    access: Access | None = None  # the API key's scope (None: no keys configured, everything allowed)
    aids: Any = None  # the aids of this run (`aids.Aids`: an eval's choice); None: the model's profile (settings)


@dataclass(slots=True)
class Step:
    """One tool call of a run and its outcome."""

    round: int
    tool_call_id: str
    name: Annotated[str, Field(description="The <server>__<tool> name the model called")]
    server: str | None
    tool: str | None
    arguments: Annotated[Any, Field(description="Arguments as sent to the tool (the raw string if they were not JSON)")]
    output: str
    is_error: bool
    duration_ms: float
    recovered_from: Annotated[
        str | None,
        Field(description="The text format the model wrote the call in (hermes, mistral, ...); null when structured"),
    ] = None
    arguments_repaired: Annotated[bool, Field(description="The call's JSON was broken and has been repaired")] = False
    arguments_coerced: Annotated[
        bool, Field(description='The arguments were repaired to the tool\'s schema ("5" -> 5, a value -> [value], ...)')
    ] = False
    approval: Annotated[
        Literal["approved", "denied", "timed_out"] | None,
        Field(description="A person's decision on a tool that needs approval (BRIDGE_APPROVAL_TOOLS); else null"),
    ] = None
    timeout_s: Annotated[
        float | None,
        Field(description="The call's timeout (s): the tool's (bridge.tool_timeouts), the server's or the default"),
    ] = None
    progress_resets: Annotated[
        int, Field(description="Progress notifications from the server that reset the call's timeout")
    ] = 0
    timed_out: Annotated[
        Literal["timeout", "hard_max"] | None,
        Field(description="The limit that cut the call: its timeout, or BRIDGE_MCP_PROGRESS_MAX_S; null if none"),
    ] = None


@dataclass(slots=True)
class RoundReasoning:
    """What the model reasoned in one round (`<think>` blocks or LM Studio's `reasoning_content`)."""

    round: int
    content: str


@dataclass(slots=True)
class RunResult:
    """The outcome of a run with the record of every step."""

    run_id: str
    status: RunStatus
    output: str
    model: Annotated[str, Field(description="The model that answered")]
    mcp_servers: list[str]
    rounds: Annotated[int, Field(description="Rounds that called tools")]
    steps: list[Step]
    usage: Usage
    duration_ms: float
    trace_id: str | None
    warnings: Annotated[list[str], Field(description="e.g. LM Studio answered with another model")] = field(
        default_factory=list
    )
    tool_calls: Annotated[
        list[dict[str, Any]],
        Field(description="Calls of the client's own function tools, handed back unexecuted (chat completions only)"),
    ] = field(default_factory=list)
    reasoning: Annotated[
        list[RoundReasoning], Field(description="The model's reasoning per round; never part of `output`")
    ] = field(default_factory=list)
    stages: Annotated[
        list[StageRecord],
        Field(description="Pipelines: every step's run record, in order (`steps` and `usage` above sum them up)"),
    ] = field(default_factory=list)
    ended_by: Annotated[
        str | None, Field(description="Pipelines: the step whose failure (or cut) ended the pipeline")
    ] = None
    context: Annotated[
        list[Fit],
        Field(description="What was fitted to the model's context window, per round (tools, output, history, window)"),
    ] = field(default_factory=list)


@dataclass(slots=True)
class StageRecord:
    """One step of a pipeline: its position, name and run record."""

    index: int
    name: str
    result: RunResult


_STEP = TypeAdapter(Step)
_RESULT = TypeAdapter(RunResult)
_STAGE = TypeAdapter(StageRecord)


def step_data(step: Step) -> dict[str, Any]:
    """The step as JSON-ready data."""
    return dict(_STEP.dump_python(step, mode="json"))


def stage_data(stage: StageRecord) -> dict[str, Any]:
    """A pipeline step's record as JSON-ready data."""
    return dict(_STAGE.dump_python(stage, mode="json"))


def stage_of(data: dict[str, Any]) -> StageRecord:
    """A pipeline step's record from its JSON data (as `stage_data` wrote it)."""
    return _STAGE.validate_python(data)


def result_data(result: RunResult) -> dict[str, Any]:
    """The run result as JSON-ready data."""
    return dict(_RESULT.dump_python(result, mode="json"))


def result_json(result: RunResult) -> bytes:
    """The run result as JSON bytes; text that UTF-8 cannot hold is written as JSON escapes."""
    try:
        return _RESULT.dump_json(result)
    except PydanticSerializationError:  # a lone surrogate that slipped through: never a failed response
        return json.dumps(result_data(result)).encode()
