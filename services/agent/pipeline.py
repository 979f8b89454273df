"""A pipeline: several runs in one request, each with its own model, tools and instruction; what one
step answers feeds the next ("a reasoning model analyses, a coding model acts").

`AgentService.prepare_pipeline` checks every step (model, servers, tools) before anything runs and
returns a `Pipeline`, which is a `Run`: it is recorded, streamed, cancelled and approved like one.
Each step is an ordinary run inside it; its events are the pipeline's, wrapped in `step.started` /
`step.completed`, and the pipeline's result carries every step's run record in `stages`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from services.agent.approvals import Decision
from services.agent.context import RunContext
from services.agent.lease import RunLease
from services.agent.options import RunOptions
from services.agent.records import RunEvent, RunResult, RunSpec, RunStatus, StageRecord, stage_data
from services.agent.run import Run
from services.agent.scope import resolve_model
from services.errors import BridgeError, InvalidRequestError

log = logging.getLogger("lmstudio_bridge.pipeline")

# {task}, {previous_output} and {steps.<name>.output}; any other brace is left as written (JSON, code)
_PLACEHOLDER = re.compile(r"\{(task|previous_output|steps\.([A-Za-z0-9_-]+)\.output)\}")
_OK: frozenset[str] = frozenset({"completed", "max_rounds"})  # a step that ends otherwise stops the pipeline


# the run options a pipeline step may set (its other options are the pipeline's)
STEP_OPTIONS = ("model", "mcp_servers", "allowed_tools", "system_prompt", "max_rounds", "max_tokens", "temperature")


@dataclass(slots=True)
class StageSpec:
    """One step of a pipeline: an ordinary run's options plus the instruction it is given."""

    name: str
    instruction: str = "{previous_output}"
    options: RunOptions = field(default_factory=RunOptions)
    on_failure: Literal["stop", "continue"] = "stop"
    unload_after: bool = False

    def described(self) -> dict[str, Any]:
        """The step as the run store keeps it."""
        options = {name: getattr(self.options, name) for name in STEP_OPTIONS}
        return {
            "name": self.name,
            "instruction": self.instruction,
            **options,
            "on_failure": self.on_failure,
            "unload_after": self.unload_after,
        }


def check_instructions(stages: list[StageSpec]) -> None:
    """Every `{steps.<name>.output}` names an EARLIER step; names are unique (422 naming the step)."""
    seen: list[str] = []
    for index, stage in enumerate(stages, 1):
        if stage.name in seen:
            raise InvalidRequestError(
                f"step {index}: the name {stage.name!r} is used by an earlier step", step=index, step_name=stage.name
            )
        for match in _PLACEHOLDER.finditer(stage.instruction):
            named = match.group(2)
            if named is not None and named not in seen:
                raise InvalidRequestError(
                    f"step {index} ({stage.name!r}): the instruction refers to {{steps.{named}.output}}, "
                    f"but no earlier step is named {named!r}",
                    step=index,
                    step_name=stage.name,
                    earlier_steps=list(seen),
                )
        seen.append(stage.name)


def render(instruction: str, task: str, previous: str, outputs: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        if match.group(1) == "task":
            return task
        if match.group(1) == "previous_output":
            return previous
        return outputs[match.group(2)]

    return _PLACEHOLDER.sub(value, instruction)


class Pipeline(Run):
    """The steps run in order, in this run's task; each step's run has no journal of its own."""

    def __init__(
        self,
        ctx: RunContext,
        spec: RunSpec,
        stages: list[tuple[StageSpec, Run]],
        lease: RunLease,
        active: set[Run],
    ) -> None:
        first = stages[0][1]
        servers = list(dict.fromkeys(s for _, run in stages for s in run.servers))
        super().__init__(ctx, spec, first.model, servers, first.tools, [], lease, active)
        self.stages = stages
        self.records: list[StageRecord] = []
        self.current: Run | None = None
        self.ended_by: str | None = None
        for _, run in stages:
            run.parent = self

    def decide(self, tool_call_id: str, decision: Decision) -> bool:
        return self.current is not None and self.current.decide(tool_call_id, decision)

    @property
    def waiting(self) -> list[str]:
        return self.current.waiting if self.current is not None else []

    async def body(self) -> tuple[RunStatus, str]:
        emit = self.emit
        task, previous, outputs = self.spec.task, self.spec.task, dict[str, str]()
        status: RunStatus = "completed"
        for index, (stage, run) in enumerate(self.stages, 1):
            run.spec.task = render(stage.instruction, task, previous, outputs)
            where = {"stage": index, "stage_name": stage.name}  # on each of the step's own events

            async def step_emit(event: str, data: dict[str, Any], where: dict[str, Any] = where) -> None:
                await emit(event, {**data, **where})

            self.current = run
            try:
                if index > 1:  # an earlier step's model may have been loaded since, or evicted by, LM Studio (JIT)
                    run.model = await resolve_model(self.ctx.catalog, stage.options.model, self.spec.access)
                    run.answered_model = run.model.id  # the record names the model this step asks (or that answers)
                started = {"stage": index, "name": stage.name, "model": run.model.id, "mcp_servers": run.servers}
                await emit(RunEvent.STEP_STARTED, started)
                result = await run.execute(step_emit)
            except BridgeError as exc:  # e.g. LM Studio down: the step failed, the pipeline ends with it
                self.ended_by = stage.name
                self.warnings.append(f"step {index} ({stage.name!r}) failed: {exc.detail}")
                result = run.result("failed", f"Error: {exc.detail}")
            except asyncio.CancelledError:  # cancelled, deadline, shutdown: what the step gathered is kept
                self.ended_by = stage.name
                ended: RunStatus = (
                    "cancelled" if self._cancel_requested else "interrupted" if self._stopping else "timeout"
                )
                record = self._absorb(index, stage, run.result(ended, run.gathered(f"The step was {ended}.")))
                await emit(RunEvent.STEP_COMPLETED, {"stage": index, "name": stage.name, "result": stage_data(record)})
                raise
            finally:
                self.current = None
            record = self._absorb(index, stage, result)
            await emit(RunEvent.STEP_COMPLETED, {"stage": index, "name": stage.name, "result": stage_data(record)})
            if stage.unload_after:
                await self._unload(stage, run)
            outputs[stage.name], previous = result.output, result.output
            status = result.status
            if status not in _OK:
                if stage.on_failure == "stop" or status == "failed":
                    self.ended_by = stage.name
                    return status, result.output
                self.warnings.append(f"step {index} ({stage.name!r}) ended {status}; the pipeline went on (on_failure)")
        return status, previous

    def _absorb(self, index: int, stage: StageSpec, result: RunResult) -> StageRecord:
        """The step's record, and its steps, usage, rounds, reasoning and warnings added to the pipeline's."""
        record = StageRecord(index=index, name=stage.name, result=result)
        self.records.append(record)
        self.steps.extend(result.steps)
        self.usage.add(result.usage)
        self.rounds += result.rounds
        self.reasoning.extend(result.reasoning)
        self.warnings.extend(f"step {index} ({stage.name!r}): {w}" for w in result.warnings)
        self.answered_model = result.model
        return record

    async def _unload(self, stage: StageSpec, run: Run) -> None:
        """Free the step's model in LM Studio (its REST API); a failure is a warning, not the pipeline's end."""
        try:
            await self.ctx.lmstudio.unload_model(run.answered_model)
            self.ctx.catalog.invalidate()
        except BridgeError as exc:
            self.warnings.append(
                f"step {stage.name!r}: the model {run.answered_model!r} was not unloaded: {exc.detail}"
            )

    def described_options(self) -> dict[str, Any]:
        return {"steps": [stage.described() for stage, _ in self.stages]}

    def result(self, status: RunStatus, output: str, duration_ms: float = 0.0) -> RunResult:
        result = super().result(status, output, duration_ms)
        result.stages = self.records
        result.ended_by = self.ended_by
        return result
