"""The app's lifespan: the gateway's parts (app.gateway) on `app.state.bridge`; on shutdown, the `/mcp`
sessions (app.front_door, started by the first request there) end before the gateway's parts close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from app.front_door import MCPFrontDoor
from app.gateway import MCPSetup, open_gateway
from app.settings import Settings
from services.access import KeyRing
from services.aio import wait_set
from services.lmstudio import HostSpec
from services.metrics import Metrics

log = logging.getLogger("lmstudio_bridge")
KEYS_POLL_S = 1.0


def lifespan_for(
    settings: Settings,
    mcp: MCPSetup,
    front_door: MCPFrontDoor | None = None,
    keys: KeyRing | None = None,
    hosts: list[HostSpec] | None = None,
    *,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            state = await stack.enter_async_context(
                open_gateway(settings, mcp, metrics=metrics, tracer_provider=tracer_provider, keys=keys, hosts=hosts)
            )
            app.state.bridge = state
            if state.keys.path is not None:
                await stack.enter_async_context(watch_keys_file(state.keys))
            if front_door is not None:  # the sessions of `/mcp` (if it was used) end before the services
                stack.push_async_callback(front_door.aclose)
            if mcp.path is None:
                log.warning("no mcp.json found (MCP_CONFIG, ./mcp.json, ~/.lmstudio/mcp.json): no MCP servers")
            log.info(
                "lmstudio-bridge started; LM Studio at %s; MCP servers: %s",
                ", ".join(h.spec.url for h in state.lmstudio.hosts),
                ", ".join(state.pool.names()) or "none",
            )
            yield

    return lifespan


@asynccontextmanager
async def watch_keys_file(keys: KeyRing) -> AsyncIterator[None]:
    """Reload the keys file when it changes (checked every KEYS_POLL_S) and on SIGHUP, without a restart."""
    loop = asyncio.get_running_loop()

    forced = asyncio.Event()  # SIGHUP: reload now, changed or not

    async def poll() -> None:
        while True:
            await wait_set(forced, KEYS_POLL_S)
            force = forced.is_set()
            forced.clear()
            await keys.reload_off_loop(force=force)  # read in a worker thread: requests are served meanwhile

    task = asyncio.create_task(poll())
    hup = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGHUP, forced.set)
        hup = True
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
