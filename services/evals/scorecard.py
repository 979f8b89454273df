"""What an eval found: each task's outcome (read off its run's result) and the per-model summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from services.agent.records import RunResult, Step

REJECTED = ("Error: the arguments", "Error: there is no tool named")


@dataclass(slots=True)
class TaskOutcome:
    """One task of an eval: its run (open it at GET /v1/runs/{run_id}) and the check's verdict."""

    task: str
    kind: str
    run_id: str | None
    status: Annotated[str, Field(description="The run's status (completed, loop, length, ...), or failed")]
    passed: Annotated[bool, Field(description="The task's program check passed")]
    reason: Annotated[str, Field(description="What the check saw")]
    tool_calls: int = 0
    valid_calls: int = 0
    executed_calls: int = 0
    recovered_calls: int = 0
    coerced_calls: int = 0
    context_fits: int = 0
    tokens: int = 0
    duration_ms: float = 0.0


def _valid(step: Step) -> bool:
    """The call named an offered tool with arguments its schema accepts (after repair)."""
    return not (step.is_error and step.output.startswith(REJECTED))


def outcome_of(task: str, kind: str, result: RunResult, passed: bool, reason: str) -> TaskOutcome:
    steps = result.steps
    return TaskOutcome(
        task=task,
        kind=kind,
        run_id=result.run_id,
        status=result.status,
        passed=passed,
        reason=reason,
        tool_calls=len(steps),
        valid_calls=sum(1 for s in steps if _valid(s)),
        executed_calls=sum(1 for s in steps if s.server and not s.is_error),
        recovered_calls=sum(1 for s in steps if s.recovered_from),
        coerced_calls=sum(1 for s in steps if s.arguments_coerced),
        context_fits=len(result.context),
        tokens=result.usage.total_tokens,
        duration_ms=result.duration_ms,
    )


@dataclass(slots=True)
class Summary:
    """A model's scorecard over the tasks of one eval."""

    tasks: int = 0
    completed: Annotated[int, Field(description="Tasks whose check passed")] = 0
    tool_score: Annotated[float, Field(description="completed / tasks (0-1)")] = 0.0
    tool_calls: Annotated[int, Field(description="Tool calls the model made")] = 0
    valid_calls: Annotated[int, Field(description="Calls naming an offered tool with schema-valid arguments")] = 0
    executed_calls: Annotated[int, Field(description="Calls an MCP server ran without error")] = 0
    recovered_calls: Annotated[int, Field(description="Calls written as text and recovered")] = 0
    coerced_calls: Annotated[int, Field(description="Calls whose arguments were repaired to the schema")] = 0
    loops: Annotated[int, Field(description="Runs ended `loop`")] = 0
    lengths: Annotated[int, Field(description="Runs ended `length`")] = 0
    context_fits: Annotated[int, Field(description="Fittings to the context window, all tasks")] = 0
    tokens_per_task: float = 0.0
    ms_per_task: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)


def summarise(outcomes: list[TaskOutcome]) -> Summary:
    n = len(outcomes)
    summary = Summary(tasks=n)
    for o in outcomes:
        summary.completed += o.passed
        summary.tool_calls += o.tool_calls
        summary.valid_calls += o.valid_calls
        summary.executed_calls += o.executed_calls
        summary.recovered_calls += o.recovered_calls
        summary.coerced_calls += o.coerced_calls
        summary.loops += o.status == "loop"
        summary.lengths += o.status == "length"
        summary.context_fits += o.context_fits
        summary.by_status[o.status] = summary.by_status.get(o.status, 0) + 1
    if n:
        summary.tool_score = round(summary.completed / n, 3)
        summary.tokens_per_task = round(sum(o.tokens for o in outcomes) / n, 1)
        summary.ms_per_task = round(sum(o.duration_ms for o in outcomes) / n, 1)
    return summary


def table(rows: list[tuple[str, Summary]]) -> str:
    """A Markdown table of scorecards (one row per model or aid setting)."""
    head = (
        "| model | completed | score | calls made / valid / executed | text calls | coerced | loops | lengths "
        "| fits | tokens/task | s/task |"
    )
    lines = [head, "|" + "---|" * 11]
    for label, s in rows:
        lines.append(
            f"| {label} | {s.completed}/{s.tasks} | {s.tool_score:.2f} | {s.tool_calls} / {s.valid_calls} / "
            f"{s.executed_calls} | {s.recovered_calls} | {s.coerced_calls} | {s.loops} | {s.lengths} | "
            f"{s.context_fits} | {s.tokens_per_task:g} | {s.ms_per_task / 1000:.1f} |"
        )
    return "\n".join(lines)


def as_json(summary: Summary) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(summary)
