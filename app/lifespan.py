"""Builds every shared object once at start-up and closes them in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from app.settings import Settings
from app.state import BridgeState
from services.catalog import ModelCatalog
from services.lmstudio import LMStudioClient
from services.retry import RetryPolicy

log = logging.getLogger("lmstudio_bridge")


def build_lmstudio(settings: Settings) -> LMStudioClient:
    token = settings.lmstudio_api_token.get_secret_value() if settings.lmstudio_api_token else None
    return LMStudioClient.create(
        settings.lmstudio_base_url,
        token=token,
        connect_timeout_s=settings.lmstudio_connect_timeout_s,
        read_timeout_s=settings.lmstudio_read_timeout_s,
        max_connections=settings.lmstudio_max_connections,
        retry=RetryPolicy(
            settings.lmstudio_retries,
            settings.lmstudio_retry_backoff_s,
            settings.lmstudio_retry_backoff_max_s,
        ),
    )


def lifespan_for(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            lmstudio = build_lmstudio(settings)
            stack.push_async_callback(lmstudio.aclose)
            catalog = ModelCatalog(
                lmstudio.list_models,
                ttl_s=settings.model_cache_ttl_s,
                default_model=settings.default_model,
                aliases=settings.model_aliases,
            )
            app.state.bridge = BridgeState(settings=settings, lmstudio=lmstudio, catalog=catalog)
            log.info("lmstudio-bridge ready; LM Studio at %s", settings.lmstudio_base_url)
            yield

    return lifespan
