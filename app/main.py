"""The application factory: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import sys

from fastapi import FastAPI
from pydantic import ValidationError

from app.errors import install_error_handler
from app.lifespan import lifespan_for
from app.settings import Settings, format_validation_error
from routers import health, models

API_DESCRIPTION = (
    "Async HTTP gateway beside LM Studio: a local model carries out tasks by calling tools on MCP servers, "
    "and every step comes back with the answer. Errors are RFC 9457 problem documents with a stable `code`."
)


def load_settings() -> Settings:
    """Settings from the environment; invalid values stop start-up with a clear message."""
    try:
        return Settings()
    except ValidationError as exc:
        print(format_validation_error(exc), file=sys.stderr)
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(
        title="lmstudio-bridge",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan_for(settings),
    )
    install_error_handler(app)
    app.include_router(health.router)
    app.include_router(models.router)
    return app
