"""The model list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AccessDep, CompatDep, StateDep
from routers.paths import named_in_path
from routers.route import Route
from routers.schemas import problem_responses
from services.status import ModelList

router = APIRouter(prefix="/v1", tags=["models"], responses=problem_responses(401), route_class=Route)
ModelId = Annotated[str, Path(description="LM Studio model id (may contain `/`)", examples=["qwen/qwen3-4b"])]


@router.get(
    "/models",
    response_model=ModelList,
    operation_id="listModels",
    summary="List models",
    responses=problem_responses(429, 502, 503, 504),
)
async def list_models(state: StateDep, access: AccessDep, response: Response) -> ModelList:
    """List LM Studio's models the API key may use (OpenAI list shape plus type, state, context length, tool use,
    default)."""
    models = await state.status.models(access)
    if models.stale:
        response.headers["X-Bridge-Stale"] = "true"
    return models


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"ttl": 600}]})
    ttl: int | None = Field(None, ge=1, description="Idle seconds before LM Studio unloads the model again")
    host: str | None = Field(
        None,
        min_length=1,
        description="The LM Studio host to load it on (its name, else its URL); default: the "
        "best host that has the model and has not loaded it",
    )


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"host": "desktop"}]})
    host: str | None = Field(
        None, min_length=1, description="The LM Studio host to unload it from; default: every host"
    )


@router.post(
    "/models/{model_id:path}/load",
    operation_id="loadModel",
    summary="Load a model",
    responses=problem_responses(400, 403, 404, 413, 422, 429, 501, 502, 503, 504),
)
async def load_model(
    model_id: ModelId, compat: CompatDep, access: AccessDep, body: LoadRequest | None = None
) -> dict[str, Any]:
    """Load a model in LM Studio (REST API of LM Studio 0.4+; else 501). An admin key's right."""
    if access is not None:
        access.check_admin("load models")
    with named_in_path():
        return await compat.load_model(model_id, body.ttl if body else None, body.host if body else None)


@router.post(
    "/models/{model_id:path}/unload",
    operation_id="unloadModel",
    summary="Unload a model",
    responses=problem_responses(400, 403, 404, 413, 422, 429, 501, 502, 503, 504),
)
async def unload_model(
    model_id: ModelId, compat: CompatDep, access: AccessDep, body: UnloadRequest | None = None
) -> dict[str, Any]:
    """Unload a model from LM Studio (REST API of LM Studio 0.4+; else 501). An admin key's right."""
    if access is not None:
        access.check_admin("unload models")
    with named_in_path():
        return await compat.unload_model(model_id, body.host if body else None)
