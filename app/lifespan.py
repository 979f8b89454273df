"""Builds every shared object once at start-up and closes them in reverse order."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from opentelemetry.sdk.trace import TracerProvider

from app.settings import Settings
from app.state import BridgeState
from app.telemetry import instrument_client
from services.agent import AgentService
from services.breaker import Breaker
from services.catalog import ModelCatalog
from services.errors import UpstreamUnavailableError
from services.limits import RunLimiter
from services.lmstudio import LMStudioClient, counts_against_lmstudio
from services.mcp_config import MCPServerConfig, find_config_path, guard_recursion, load_mcp_config
from services.mcp_pool import MCPPool
from services.metrics import Metrics, StateReader
from services.openai_compat import OpenAICompat
from services.retry import RetryPolicy

log = logging.getLogger("lmstudio_bridge")


@dataclass(frozen=True, slots=True)
class MCPSetup:
    path: Path | None
    servers: dict[str, MCPServerConfig]

    def secret_values(self) -> list[str]:
        """MCP env and header values: never logged."""
        return [v for cfg in self.servers.values() for v in (*cfg.env.values(), *cfg.headers.values())]


def load_mcp_setup(settings: Settings) -> MCPSetup:
    """Find and parse mcp.json; raises MCPConfigError naming the server and field."""
    path = find_config_path(settings.mcp_config, Path.cwd(), Path.home())
    servers = guard_recursion(load_mcp_config(path, os.environ), settings.host, settings.port)
    for cfg in servers.values():
        if cfg.is_bridge:
            log.warning("MCP server %r skipped: it is lmstudio-bridge itself (recursion guard)", cfg.name)
    return MCPSetup(path, servers)


def _breaker_states(lmstudio: LMStudioClient, pool: MCPPool) -> dict[str, str]:
    states = {"lmstudio": lmstudio.breaker.state} if lmstudio.breaker else {}
    return states | {f"mcp:{s.name}": s.breaker for s in pool.status()}


def build_lmstudio(settings: Settings, metrics: Metrics | None = None) -> LMStudioClient:
    token = settings.lmstudio_api_token.get_secret_value() if settings.lmstudio_api_token else None
    breaker = Breaker(
        "LM Studio",
        failures=settings.breaker_failures,
        reset_s=settings.breaker_reset_s,
        counts=counts_against_lmstudio,
        unavailable=lambda detail, wait: UpstreamUnavailableError(detail, retry_after=wait),
    )
    return LMStudioClient.create(
        settings.lmstudio_base_url,
        token=token,
        connect_timeout_s=settings.lmstudio_connect_timeout_s,
        read_timeout_s=settings.lmstudio_read_timeout_s,
        max_connections=settings.lmstudio_max_connections,
        retry=RetryPolicy(
            settings.lmstudio_retries, settings.lmstudio_retry_backoff_s, settings.lmstudio_retry_backoff_max_s
        ),
        breaker=breaker,
        metrics=metrics,
    )


def build_pool(settings: Settings, servers: dict[str, MCPServerConfig], metrics: Metrics | None = None) -> MCPPool:
    return MCPPool(
        servers,
        call_timeout_s=settings.mcp_call_timeout_s,
        start_timeout_s=settings.mcp_start_timeout_s,
        idle_s=settings.mcp_idle_s,
        max_concurrency=settings.mcp_max_concurrency,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_s,
        metrics=metrics,
        capture_content=settings.otel_capture_content,
    )


def lifespan_for(
    settings: Settings,
    mcp: MCPSetup,
    mcp_server: MCPServer[Any] | None = None,
    *,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            lmstudio = build_lmstudio(settings, metrics)
            stack.push_async_callback(lmstudio.aclose)
            if tracer_provider is not None:
                instrument_client(lmstudio.http, tracer_provider)
                stack.callback(tracer_provider.force_flush)
            catalog = ModelCatalog(
                lmstudio.list_models,
                ttl_s=settings.model_cache_ttl_s,
                default_model=settings.default_model,
                aliases=settings.model_aliases,
            )
            pool = build_pool(settings, mcp.servers, metrics)
            stack.push_async_callback(pool.aclose)
            await pool.start(warmup=settings.mcp_warmup)
            limiter = RunLimiter(settings.max_concurrent_runs, settings.queue_timeout_s)
            agent = AgentService(
                lmstudio,
                catalog,
                pool,
                limiter,
                run_timeout_s=settings.run_timeout_s,
                tool_output_max_chars=settings.tool_output_max_chars,
                load_timeout_s=settings.lmstudio_load_timeout_s,
                metrics=metrics,
                capture_content=settings.otel_capture_content,
            )
            metrics.watch(
                StateReader(
                    runs_in_flight=lambda: limiter.in_flight,
                    runs_rejected=lambda: limiter.rejected,
                    live_sessions=pool.live_sessions,
                    cache_hits=lambda: catalog.hits,
                    cache_misses=lambda: catalog.misses,
                    breakers=lambda: _breaker_states(lmstudio, pool),
                )
            )
            app.state.bridge = BridgeState(
                settings=settings,
                lmstudio=lmstudio,
                catalog=catalog,
                pool=pool,
                mcp_config_path=mcp.path,
                limiter=limiter,
                agent=agent,
                compat=OpenAICompat(lmstudio, catalog, agent),
                metrics=metrics,
            )
            if mcp_server is not None:  # the sessions of `/mcp` (streamable HTTP) end before the services
                await stack.enter_async_context(mcp_server.session_manager.run())
            if mcp.path is None:
                log.warning("no mcp.json found (MCP_CONFIG, ./mcp.json, ~/.lmstudio/mcp.json): no MCP servers")
            log.info(
                "lmstudio-bridge ready; LM Studio at %s; MCP servers: %s",
                settings.lmstudio_base_url,
                ", ".join(pool.names()) or "none",
            )
            yield

    return lifespan
