"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import StateDep
from routers.schemas import Health, Readiness
from services.errors import LLMError

router = APIRouter(tags=["health"])


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
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 when LM Studio answers, else 503 with the reasons."""
    breaker = state.lmstudio.breaker
    lmstudio: dict[str, object] = {"url": state.lmstudio.base_url, "breaker": breaker.state if breaker else None}
    try:
        await state.lmstudio.ping()
        lmstudio["ok"] = True
    except LLMError as exc:
        lmstudio.update(ok=False, error=exc.detail, code=exc.code)
    ready = bool(lmstudio["ok"]) and lmstudio["breaker"] != "open"
    servers = [
        {"name": s.name, "status": s.status, "breaker": s.breaker, "last_error": s.last_error}
        for s in state.pool.status()
    ]
    mcp: dict[str, object] = {
        "config_path": str(state.mcp_config_path) if state.mcp_config_path else None,
        "servers": servers,
    }
    if not servers:
        mcp["note"] = (
            "no MCP servers configured (no mcp.json found)"
            if state.mcp_config_path is None
            else "mcp.json lists no servers"
        )
    body = Readiness(status="ready" if ready else "not_ready", lmstudio=lmstudio, mcp=mcp)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
