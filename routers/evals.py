"""/v1/evals: the tool-use suite run on models in the background (admin keys), and the scorecards it stored."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AccessDep, EvalsDep
from routers.route import Route
from routers.schemas import problem_responses
from services.agent.aids import AID_NAMES, Aids
from services.evals import SUITE, EvalList, EvalRecord
from services.evals.records import EVAL_LIST

router = APIRouter(prefix="/v1/evals", tags=["evals"], route_class=Route)
MAX_MODELS = 10

AidName = Literal["nudge", "repair", "loop_hint"]
EvalId = Annotated[str, Path(description="The eval's id", examples=["eval_5f0c1e2a9b7d4c3e8a6f1b2d"])]


class EvalRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"models": ["qwen/qwen3-4b"], "tasks": ["no_tool"]}]},
    )

    models: list[str] = Field(min_length=1, max_length=MAX_MODELS, description="Model ids or aliases to evaluate")
    aids: list[AidName] = Field(default_factory=list, description="Aids switched on for every eval (default: none)")
    compare_aids: bool = Field(
        False, description="Run each model without aids and with each aid alone (4 evals a model); `aids` is ignored"
    )
    tasks: list[str] | None = Field(
        None, max_length=len(SUITE), description="Task names or kinds of the suite (default: every task)"
    )
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="max_tokens of each call of a task's run")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="Deadline of each task's run")


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


@router.post(
    "",
    status_code=202,
    response_model=EvalList,
    responses=problem_responses(400, 401, 403, 413, 422, 429, 503),
    operation_id="startEvals",
    summary="Evaluate models on the tool-use suite",
)
async def start_evals(body: EvalRequest, evals: EvalsDep, access: AccessDep) -> Response:
    """Run the suite on each model in the background, one eval after another (an admin key's right); each task is a
    run of its own (`GET /v1/runs/{run_id}`), the scorecards are at `GET /v1/evals`."""
    if access is not None:
        access.check_admin("run evals")
    settings = [Aids(), *(Aids.of([name]) for name in AID_NAMES)] if body.compare_aids else [Aids.of(body.aids)]
    plans = [
        await evals.plan(model, aids, body.tasks, access=access, max_tokens=body.max_tokens, timeout_s=body.timeout_s)
        for model in dict.fromkeys(body.models)
        for aids in settings
    ]
    records = await evals.submit(plans)
    return _json(EVAL_LIST.dump_json(EvalList(records)), 202)


@router.get(
    "",
    response_model=EvalList,
    responses=problem_responses(401, 422),
    operation_id="listEvals",
    summary="List evals, newest first",
)
async def list_evals(
    evals: EvalsDep,
    model: Annotated[str | None, Query(description="Only evals of this model")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Evals to list")] = 50,
) -> Response:
    """Stored evals newest first, each with its tasks' outcomes (and run ids) and its scorecard."""
    return _json(EVAL_LIST.dump_json(EvalList(await evals.newest(limit, model))))


@router.get(
    "/{eval_id}",
    response_model=EvalRecord,
    responses=problem_responses(401, 404, 422),
    operation_id="getEval",
    summary="One eval",
)
async def get_eval(eval_id: EvalId, evals: EvalsDep) -> EvalRecord:
    """One eval: each task's outcome and run id, and the scorecard (so far, while it runs)."""
    return await evals.get(eval_id)
