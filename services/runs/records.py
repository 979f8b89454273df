"""What the run store gives back: a run's record (and how a `runs` row and its events become one), a page
of records, one stored event."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from services.agent import RunEvent, RunResult, Step
from services.agent.records import RoundReasoning, stage_of
from services.context.fit import Fit
from services.lmstudio import Usage


@dataclass(slots=True)
class RunRecord(RunResult):
    """A stored run: the run result's fields (so far, while it runs) plus where it stands and when.
    In a list (`GET /v1/runs`) `steps` and `reasoning` are left empty, and `task` and every text in `options`
    (the messages of a chat completion, a system prompt) are cut to a preview of 200 characters ending in "…";
    `GET /v1/runs/{run_id}` has them all."""

    task: Annotated[str, Field(description="The task (for chat completions: the last user message)")] = ""
    model_requested: Annotated[str | None, Field(description="The model the request named (null: default)")] = None
    options: Annotated[dict[str, Any], Field(description="The request's other options (limits, tools, ...)")] = field(
        default_factory=dict
    )
    key_name: Annotated[str | None, Field(description="The name of the API key that started it")] = None
    incomplete: Annotated[
        bool, Field(description="Some of the run's writes to the store were lost (see the store's metrics)")
    ] = False
    error: Annotated[
        dict[str, Any] | None, Field(description="The problem document that ended a failed or interrupted run")
    ] = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(slots=True)
class RunPage:
    """Runs newest first; pass `next_cursor` as `cursor` for the next page (null: no more)."""

    data: list[RunRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a run: its sequence number, name and JSON data (as stored)."""

    seq: int
    event: str
    data: str


_RECORD = TypeAdapter(RunRecord)
_PAGE = TypeAdapter(RunPage)


def record_json(record: RunRecord) -> bytes:
    return _RECORD.dump_json(record)


def page_json(page: RunPage) -> bytes:
    return _PAGE.dump_json(page)


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


# the events a record's steps, reasoning and (pipelines) stages are rebuilt from
RECORD_EVENTS = (
    RunEvent.TOOL_CALL_COMPLETED,
    RunEvent.REASONING,
    RunEvent.CONTEXT_FITTED,
    RunEvent.STEP_COMPLETED,
    RunEvent.COMPLETED,
)
_STEP_FIELDS = frozenset(Step.__dataclass_fields__)
_REASONING_FIELDS = frozenset(RoundReasoning.__dataclass_fields__)
_FIT_FIELDS = frozenset(Fit.__dataclass_fields__)


def add_to_record(record: RunRecord, event: str, data: dict[str, Any]) -> None:
    """One stored event's part of the record (a pipeline's events also say which step they belong to)."""
    if event == RunEvent.TOOL_CALL_COMPLETED:
        record.steps.append(Step(**{k: v for k, v in data.items() if k in _STEP_FIELDS}))
    elif event == RunEvent.REASONING:
        record.reasoning.append(RoundReasoning(**{k: v for k, v in data.items() if k in _REASONING_FIELDS}))
    elif event == RunEvent.CONTEXT_FITTED:
        record.context.append(Fit(**{k: v for k, v in data.items() if k in _FIT_FIELDS}))
    elif event == RunEvent.STEP_COMPLETED:
        record.stages.append(stage_of(data["result"]))
    else:
        record.ended_by = data.get("ended_by")


PREVIEW_CHARS = 200  # a list item's task and option texts: a page stays small whatever the runs were sent


def preview(value: Any) -> Any:
    """`value` with every text longer than PREVIEW_CHARS cut to it (ending in "…")."""
    if isinstance(value, str):
        return value if len(value) <= PREVIEW_CHARS else value[: PREVIEW_CHARS - 1] + "…"
    if isinstance(value, list):
        return [preview(item) for item in value]
    if isinstance(value, dict):
        return {key: preview(item) for key, item in value.items()}
    return value


def listed_of(row: Any) -> RunRecord:
    """A `runs` row as a list item: `record_of` with the task and the options' texts cut to a preview."""
    record = record_of(row)
    record.task, record.options = preview(record.task), preview(record.options)
    return record


def record_of(row: Any) -> RunRecord:
    """A `runs` row as a record (steps, reasoning and stages are added from its events: `add_to_record`)."""
    return RunRecord(
        run_id=row["run_id"],
        status=row["status"],
        output=row["output"],
        model=row["model"],
        mcp_servers=json.loads(row["mcp_servers"]),
        rounds=row["rounds"],
        steps=[],
        usage=Usage.from_json(json.loads(row["usage"]) if row["usage"] else None),
        duration_ms=row["duration_ms"] or 0.0,
        trace_id=row["trace_id"],
        warnings=json.loads(row["warnings"]) if row["warnings"] else [],
        tool_calls=json.loads(row["tool_calls"]) if row["tool_calls"] else [],
        reasoning=[],
        task=row["task"],
        model_requested=row["model_requested"],
        options=json.loads(row["options"]),
        key_name=row["key_name"],
        incomplete=bool(row["incomplete"]),
        error=json.loads(row["error"]) if row["error"] else None,
        created_at=_time(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
    )
