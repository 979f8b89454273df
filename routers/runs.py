"""/v1/runs: runs that outlive their request, their stored records, event streams and approvals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AccessDep, RunsDep
from routers.autonomous import AutonomousRequest
from routers.pipelines import MAX_STEPS, PipelineStep, pipeline_spec, stages_of
from routers.route import Route
from routers.schemas import STORED_EVENT_SCHEMA, problem_responses
from routers.streaming import StoredEventStream
from services.agent import RunStatus, run_spec
from services.agent.approvals import REASON_MAX_CHARS, Decision
from services.errors import InvalidRequestError
from services.runs import RunFilter, RunPage, RunRecord, page_json, record_json

router = APIRouter(prefix="/v1/runs", tags=["runs"], route_class=Route)
MAX_SEQ = 2**31 - 1  # event sequence numbers are 32-bit in the store

RunId = Annotated[str, Path(description="The run's id", examples=["run_5f0c1e2a9b7d4c3e8a6f1b2d"])]
ToolCallId = Annotated[str, Path(description="The `tool_call_id` of `approval.requested`", examples=["call_0_0"])]


class RunsRequest(AutonomousRequest):
    steps: list[PipelineStep] | None = Field(
        None, min_length=1, max_length=MAX_STEPS, description="Steps of a pipeline (as POST /v1/pipelines)"
    )


class RunAccepted(BaseModel):
    run_id: str
    status: Literal["queued", "running"] = Field(description="running: it took a run slot; queued: it waits for one")


class RunCancelling(BaseModel):
    run_id: str
    status: Literal["cancelling"] = Field(description="The run stops and ends `cancelled`")


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"decision": "deny", "reason": "not that file"}]}
    )

    decision: Literal["approve", "deny"]
    reason: str = Field("", max_length=REASON_MAX_CHARS, description="Why; a denial's reason is what the model reads")


class ApprovalDecided(BaseModel):
    run_id: str
    tool_call_id: str
    decision: Literal["approve", "deny"]


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="application/json")


@router.post(
    "",
    status_code=202,
    response_model=RunAccepted,
    responses=problem_responses(400, 401, 403, 413, 422, 429, 503),
    operation_id="startRun",
    summary="Start a run in the background",
)
async def start_run(body: RunsRequest, runs: RunsDep, access: AccessDep) -> Response:
    """Start a run that goes on when the client leaves; follow it at `Location` and its `/events`.
    The body is the `/v1/autonomous` body (`stream` and `store: false` do not apply)."""
    if body.stream:
        raise InvalidRequestError("A background run does not stream here; follow GET /v1/runs/{run_id}/events")
    if not body.store:
        raise InvalidRequestError("A background run is always stored; leave out `store` or set it to true")
    if body.steps is not None:  # a pipeline
        run = await runs.submit(pipeline_spec(body, access=access), stages_of(body, body.steps))
    else:
        run = await runs.submit(run_spec(body, access=access))
    accepted = RunAccepted(run_id=run.run_id, status="queued" if run.status == "queued" else "running")
    return _json(accepted.model_dump_json().encode(), 202, {"Location": f"/v1/runs/{run.run_id}"})


@router.get(
    "",
    response_model=RunPage,
    responses=problem_responses(401, 422),
    operation_id="listRuns",
    summary="List stored runs, newest first",
)
async def list_runs(
    runs: RunsDep,
    access: AccessDep,
    status: Annotated[RunStatus | None, Query(description="Only runs with this status")] = None,
    model: Annotated[str | None, Query(description="Only runs answered by this model")] = None,
    server: Annotated[str | None, Query(description="Only runs that used this MCP server")] = None,
    since: Annotated[
        str | None,
        Query(
            description="Only runs created at or after this time (ISO 8601; UTC when no offset)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Runs per page")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before", pattern=r"^\d{1,18}$")] = None,
) -> Response:
    """Stored runs newest first (steps and reasoning left out; `task` and `options.messages` cut to a short
    preview, the full record at `GET /v1/runs/{run_id}`), with filters and cursor paging."""
    filters = RunFilter(status=status, model=model, server=server, since=_instant(since))
    return _json(page_json(await runs.page(filters, limit, cursor, access)))


@router.get(
    "/{run_id}",
    response_model=RunRecord,
    responses=problem_responses(401, 404, 422),
    operation_id="getRun",
    summary="A stored run",
)
async def get_run(run_id: RunId, runs: RunsDep, access: AccessDep) -> Response:
    """The run's record: the `/v1/autonomous` result fields (so far, while it runs) plus status and times."""
    return _json(record_json(await runs.get(run_id, access)))


@router.get(
    "/{run_id}/events",
    responses={
        200: {"description": "The run's events", "content": {"text/event-stream": {"schema": STORED_EVENT_SCHEMA}}},
        **problem_responses(401, 404, 422),
    },
    response_class=Response,
    operation_id="streamRunEvents",
    summary="Replay and follow a run's events (SSE)",
)
async def run_events(
    run_id: RunId,
    runs: RunsDep,
    access: AccessDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Replay events after this sequence number")
    ] = None,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this event id (sent by EventSource on reconnect)")
    ] = None,
) -> Response:
    """Server-Sent Events of the run, each with `id:` = its sequence number: what came after `after`
    (or `Last-Event-ID`), then live events until the terminal `run.completed` / `run.failed`."""
    start = after if after is not None else _event_id(last_event_id)
    return StoredEventStream(run_id, await runs.events(run_id, start, access))


def _event_id(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    value = value.strip()
    # the length first: int() of a very long number is slow, and past 4,300 digits a ValueError
    if len(value) > len(str(MAX_SEQ)) or not value.isascii() or not value.isdigit() or int(value) > MAX_SEQ:
        raise InvalidRequestError("Last-Event-ID must be an event's sequence number", field="Last-Event-ID")
    return int(value)


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError("since must be an ISO 8601 date and time", field="since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunCancelling,
    responses=problem_responses(401, 404, 409, 413, 422),
    operation_id="cancelRun",
    summary="Cancel a run",
)
async def cancel_run(run_id: RunId, runs: RunsDep, access: AccessDep) -> Response:
    """Stop a run that has not ended; it ends `cancelled` with what it gathered. 409 once it ended."""
    await runs.cancel(run_id, access)
    return _json(RunCancelling(run_id=run_id, status="cancelling").model_dump_json().encode(), 202)


@router.delete(
    "/{run_id}",
    status_code=204,
    responses=problem_responses(401, 404, 409, 422),
    operation_id="deleteRun",
    summary="Delete a finished run",
)
async def delete_run(run_id: RunId, runs: RunsDep, access: AccessDep) -> Response:
    """Delete the record and events of a run that has ended (409 while it runs)."""
    await runs.delete(run_id, access)
    return Response(status_code=204)


@router.post(
    "/{run_id}/approvals/{tool_call_id}",
    response_model=ApprovalDecided,
    responses=problem_responses(400, 401, 404, 413, 422),
    operation_id="decideApproval",
    summary="Approve or deny a tool call",
)
async def decide(
    run_id: RunId, tool_call_id: ToolCallId, body: ApprovalDecision, runs: RunsDep, access: AccessDep
) -> Any:
    """Decide on a tool call the run awaits approval for (`approval.requested`): approve runs exactly the
    arguments shown; deny sends the reason to the model as the tool's result."""
    decision = Decision("approved" if body.decision == "approve" else "denied", body.reason)
    await runs.decide(run_id, tool_call_id, decision, access)
    return ApprovalDecided(run_id=run_id, tool_call_id=tool_call_id, decision=body.decision)
