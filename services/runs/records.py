"""What the run store gives back: a run's record, a page of records, one stored event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from services.agent import RunResult


@dataclass(slots=True)
class RunRecord(RunResult):
    """A stored run: the run result's fields (so far, while it runs) plus where it stands and when.
    In a list (`GET /v1/runs`) `steps` and `reasoning` are left empty; `GET /v1/runs/{run_id}` has them."""

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
