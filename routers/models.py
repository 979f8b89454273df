"""The model list."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import CatalogDep
from routers.schemas import ModelEntry, ModelList, problem_responses
from services.errors import ModelNotFoundError

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, operation_id="listModels", responses=problem_responses(502, 503, 504))
async def list_models(catalog: CatalogDep, response: Response) -> ModelList:
    """List LM Studio's models (OpenAI list shape plus type, state, context length, tool use, default)."""
    snap = await catalog.snapshot()
    try:
        default_id: str | None = (await catalog.resolve(None)).id
    except ModelNotFoundError:
        default_id = None
    if snap.stale:
        response.headers["X-Bridge-Stale"] = "true"
    return ModelList(
        data=[
            ModelEntry(
                id=m.id,
                type=m.type,
                state="loaded" if m.loaded else "not-loaded",
                max_context_length=m.max_context_length,
                tool_use=m.tool_use,
                default=m.id == default_id,
            )
            for m in snap.models
        ],
        aliases=catalog.aliases,
        stale=snap.stale,
    )
