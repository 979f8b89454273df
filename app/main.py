"""The application factory: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import os
from typing import cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.errors import install_error_handler
from app.front_door import MCPFrontDoor
from app.gateway import BridgeState, MCPSetup, all_secrets, load_hosts, load_keys, load_mcp, load_mcp_setup
from app.lifespan import lifespan_for
from app.security import APIKeyMiddleware, BodyLimitMiddleware
from app.settings import Settings, load_settings, warn_unknown_variables
from app.telemetry import (
    RequestContextMiddleware,
    configure_logging,
    instrument,
    tracer_provider,
)
from routers import autonomous, console, evals, health, mcp, models, openai, pipelines, prompts, runs
from routers import metrics as metrics_router
from services.access import KeyRing
from services.metrics import Metrics

API_DESCRIPTION = (
    "Async HTTP gateway beside LM Studio: a local model carries out tasks by calling tools on MCP servers, "
    "and every step comes back with the answer. Errors are RFC 9457 problem documents with a stable `code`."
)


def create_app(
    settings: Settings | None = None,
    mcp_setup: MCPSetup | None = None,
    *,
    configure_logs: bool = False,
    keys: KeyRing | None = None,
) -> FastAPI:
    """The ASGI app. Without arguments it reads the environment (and exits on invalid config)."""
    from_env = settings is None
    settings = settings or load_settings()
    if mcp_setup is None:  # tests pass settings and get MCPConfigError raised instead of an exit
        mcp_setup = load_mcp(settings) if from_env else load_mcp_setup(settings)
    keys = keys or load_keys(settings, exit_on_error=from_env)
    hosts = load_hosts(settings, exit_on_error=from_env)
    if configure_logs or from_env:
        configure_logging(settings.log_level, all_secrets(settings, mcp_setup, hosts), more=keys.secrets)
        warn_unknown_variables(os.environ)
    metrics = Metrics()
    provider = tracer_provider(settings)
    # the MCP front door, built on its first request; its tools read the state the lifespan puts on `app`
    front_door = MCPFrontDoor(settings, lambda: cast(BridgeState, app.state.bridge))
    app = FastAPI(
        title="lmstudio-bridge",
        version="0.1.0",
        description=API_DESCRIPTION,
        redirect_slashes=False,  # a redirect would be built from the client's Host header: 404 instead
        docs_url="/docs" if settings.api_docs else None,  # BRIDGE_API_DOCS: pages whose scripts come from a CDN
        redoc_url="/redoc" if settings.api_docs else None,
        # our own spans and Prometheus metrics cover requests; FastAPI's native telemetry would add cost only
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        lifespan=lifespan_for(settings, mcp_setup, front_door, keys, hosts, metrics=metrics, tracer_provider=provider),
    )
    install_error_handler(app)
    # outermost last: body limit, then API keys, then CORS (so preflights are answered first)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(APIKeyMiddleware, keys=keys, protect_metrics=settings.metrics_require_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID", "Mcp-Session-Id"],
            expose_headers=["X-Request-ID", "X-Trace-ID", "X-Run-ID", "Retry-After", "Mcp-Session-Id"],
        )
    instrumented = instrument(app, provider)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, open_trace=not instrumented)
    # The routes go into the app's own list, the hot ones first (matching stops at the first match) and ahead
    # of FastAPI's /docs routes. `include_router` would nest each router: every request would then be matched
    # against every route of each router before its own, and its own router's routes twice (FastAPI 0.163),
    # ~50 µs per request by the time the MCP routes come. The routers hold their full paths (their prefix).
    hot_first = (autonomous, openai, mcp, runs, pipelines, models, evals, health, metrics_router, prompts)
    app.router.routes[:0] = [route for module in hot_first for route in module.router.routes]
    app.router.routes.append(front_door.route())  # `/mcp`, no redirect to `/mcp/`
    app.router.routes.extend(console.router.routes)  # the run console at /ui (static files, last: never hot)
    return app
