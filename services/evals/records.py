"""An eval as it is stored and shown (`GET /v1/evals`): the model, the aids, each task's outcome, the scorecard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from services.evals.scorecard import Summary, TaskOutcome

EvalStatus = Literal["queued", "running", "completed", "failed", "interrupted"]


@dataclass(slots=True)
class EvalRecord:
    """One eval of one model with one set of aids."""

    eval_id: str
    status: Annotated[
        EvalStatus,
        Field(description="queued (after other evals); running; completed (every task ran); failed; interrupted"),
    ]
    model: Annotated[str, Field(description="The model evaluated (its resolved id)")]
    aids: Annotated[list[str], Field(description="The aids switched on: nudge, repair, loop_hint")]
    seed: int
    temperature: float
    tasks: Annotated[
        list[TaskOutcome], Field(description="Each task's outcome; its run opens at GET /v1/runs/{run_id}")
    ] = field(default_factory=list)
    summary: Annotated[Summary | None, Field(description="The scorecard (so far, while it runs)")] = None
    error: Annotated[str | None, Field(description="Why a failed eval stopped")] = None
    key_name: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(slots=True)
class EvalList:
    """Evals, newest first."""

    data: list[EvalRecord]


OUTCOMES = TypeAdapter(list[TaskOutcome])
SUMMARY = TypeAdapter(Summary)
EVAL_LIST = TypeAdapter(EvalList)
EVAL_RECORDS = TypeAdapter(list[EvalRecord])


def suggested_profiles(records: list[EvalRecord]) -> dict[str, list[str]]:
    """Per model, the aids that each alone completed more tasks than no aid did (completed evals of one model with
    no aid and with single aids: `--compare-aids`): a BRIDGE_AID_PROFILES entry chosen from the scorecard."""
    profiles: dict[str, list[str]] = {}
    done = [r for r in records if r.status == "completed" and r.summary is not None]
    for model in dict.fromkeys(r.model for r in done):
        base = next((r for r in done if r.model == model and not r.aids), None)
        if base is None or base.summary is None:
            continue
        helped = [
            r.aids[0]
            for r in done
            if r.model == model and len(r.aids) == 1 and r.summary and r.summary.completed > base.summary.completed
        ]
        profiles[model] = helped
    return profiles
