"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter

from app.deps import StateDep
from routers.route import Route
from routers.schemas import Health
from services.status import Readiness

router = APIRouter(tags=["health"], route_class=Route)
READINESS = TypeAdapter(Readiness)


@router.get("/healthz", response_model=Health, operation_id="healthz", summary="Liveness")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readyz",
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readyz(state: StateDep) -> Response:
    """Readiness: 200 when LM Studio answers, its breaker is not open and the run store takes writes, else 503."""
    readiness = await state.status.readiness()
    status = 200 if readiness.status == "ready" else 503
    return Response(READINESS.dump_json(readiness), status_code=status, media_type="application/json")
