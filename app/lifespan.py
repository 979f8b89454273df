"""The app's lifespan: the gateway's parts (app.gateway) on `app.state.bridge`; on shutdown, the `/mcp`
sessions (app.front_door, started by the first request there) end before the gateway's parts close."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from app.front_door import MCPFrontDoor
from app.gateway import MCPSetup, open_gateway
from app.settings import Settings
from services.metrics import Metrics

log = logging.getLogger("lmstudio_bridge")


def lifespan_for(
    settings: Settings,
    mcp: MCPSetup,
    front_door: MCPFrontDoor | None = None,
    *,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            state = await stack.enter_async_context(
                open_gateway(settings, mcp, metrics=metrics, tracer_provider=tracer_provider)
            )
            app.state.bridge = state
            if front_door is not None:  # the sessions of `/mcp` (if it was used) end before the services
                stack.push_async_callback(front_door.aclose)
            if mcp.path is None:
                log.warning("no mcp.json found (MCP_CONFIG, ./mcp.json, ~/.lmstudio/mcp.json): no MCP servers")
            log.info(
                "lmstudio-bridge ready; LM Studio at %s; MCP servers: %s",
                settings.lmstudio_base_url,
                ", ".join(state.pool.names()) or "none",
            )
            yield

    return lifespan
