"""POST /v1/pipelines: several runs in one request, each step with its own model and tools."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AgentDep
from app.security import access_of
from routers.autonomous import AutonomousRequest, respond
from routers.route import Route
from routers.schemas import PIPELINE_EVENT_SCHEMA, problem_responses
from services.agent import STEP_OPTIONS, RunOptions, RunResult, RunSpec, StageSpec
from services.agent.options import AllowedTools, MaxRounds, MaxTokens, MCPServers, Model, SystemPrompt, Temperature

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], route_class=Route)
MAX_STEPS = 20
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The pipeline's result (every step's run record in `stages`), or Server-Sent Events",
        "content": {"text/event-stream": {"schema": PIPELINE_EVENT_SCHEMA}},
    },
    **problem_responses(400, 401, 403, 413, 422, 429, 502, 503, 504),
}


class PipelineStep(BaseModel):
    """One step: an ordinary run's settings and the instruction it gets. Unset fields take the request's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="For {steps.<name>.output}; default step<N>"
    )
    instruction: str | None = Field(
        None,
        max_length=20_000,
        description="What the step's model is asked; may use {task}, {previous_output} and {steps.<name>.output}. "
        "Default: {task} for the first step, {previous_output} after it",
    )
    model: Model = None
    mcp_servers: MCPServers = None
    allowed_tools: AllowedTools = None
    system_prompt: SystemPrompt = None
    max_rounds: MaxRounds = None
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    on_failure: Literal["stop", "continue"] = Field(
        "stop", description="A step that ends failed, length, loop or timeout stops the pipeline unless continue"
    )
    unload_after: bool = Field(False, description="Unload the step's model when the step ends (LM Studio 0.4+)")


class PipelineRequest(AutonomousRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task": "Find why tests/test_parse.py fails and fix it",
                    "steps": [
                        {
                            "name": "analyse",
                            "model": "qwen/qwen3-4b",
                            "mcp_servers": ["filesystem"],
                            "allowed_tools": ["filesystem__read_text_file", "filesystem__list_directory"],
                            "instruction": "Study the problem and write a plan: {task}",
                        },
                        {
                            "name": "act",
                            "model": "qwen/qwen2.5-coder-7b",
                            "mcp_servers": ["filesystem"],
                            "instruction": "Carry out this plan: {steps.analyse.output}",
                        },
                    ],
                }
            ]
        },
    )
    steps: list[PipelineStep] = Field(min_length=1, max_length=MAX_STEPS, description="The steps, run in order")


def stages_of(body: AutonomousRequest, steps: list[PipelineStep]) -> list[StageSpec]:
    """The steps as stage specs; a step's unset options take the request's."""
    stages = []
    for index, step in enumerate(steps, 1):
        options = {name: _first_set(getattr(step, name), getattr(body, name)) for name in STEP_OPTIONS}
        stages.append(
            StageSpec(
                name=step.name or f"step{index}",
                instruction=step.instruction or ("{task}" if index == 1 else "{previous_output}"),
                options=RunOptions.model_construct(**options),  # each value was checked on its own model
                on_failure=step.on_failure,
                unload_after=step.unload_after,
            )
        )
    return stages


def pipeline_spec(body: AutonomousRequest, **extra: Any) -> RunSpec:
    """The pipeline's own run spec: its task and deadline (the other options are its steps')."""
    return RunSpec(task=body.task, timeout_s=body.timeout_s, **extra)


def _first_set(mine: Any, default: Any) -> Any:
    return mine if mine is not None else default


@router.post(
    "",
    response_model=RunResult,
    responses=RESPONSES,
    operation_id="runPipeline",
    summary="Run a multi-model pipeline",
)
async def pipeline(body: PipelineRequest, request: Request, agent: AgentDep) -> Response:
    """Run the steps in order, each an ordinary run with its own model, tools and instruction; the output of one
    feeds the next. The result carries every step's run record in `stages`."""
    spec = pipeline_spec(body, store=body.store, access=access_of(request.scope))
    run = await agent.open_pipeline(spec, stages_of(body, body.steps))
    return await respond(request, run, body.stream)
