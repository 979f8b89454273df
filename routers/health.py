"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import StateDep
from routers.schemas import Health, Readiness
from services.errors import LLMError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="healthz")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readyz",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 when LM Studio answers, else 503 with the reasons."""
    lmstudio: dict[str, object] = {"url": state.lmstudio.base_url}
    try:
        await state.lmstudio.ping()
        lmstudio["ok"] = True
    except LLMError as exc:
        lmstudio.update(ok=False, error=exc.detail, code=exc.code)
    ready = bool(lmstudio["ok"])
    body = Readiness(status="ready" if ready else "not_ready", lmstudio=lmstudio)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
