"""Runs as MCP resources at the front door: `run://{run_id}` reads the run's record (the JSON of `GET
/v1/runs/{id}`) within the API key's scope, and on the handshake revisions (2025-11-25 and earlier) a client may
`resources/subscribe` to it: one `notifications/resources/updated` per run event until the run ends.

This module imports the MCP SDK: only the front door (routers.mcp_front) imports it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from app.gateway import BridgeState
from app.security import access_of
from services.access import Access
from services.errors import RunNotFoundError
from services.runs import record_json

log = logging.getLogger("lmstudio_bridge.mcp")

RUN_SCHEME = "run://"
RUN_URI = RUN_SCHEME + "{run_id}"


def request_access(request: Any) -> Access | None:
    """The API key's scope, from the HTTP request a message came in (None over stdio, or without keys)."""
    scope = getattr(request, "scope", None)
    return access_of(scope) if isinstance(scope, dict) else None


def add_run_resources(server: MCPServer[Any], state: Callable[[], BridgeState]) -> None:
    """`run://{run_id}` on `server`, and resource subscriptions to it."""

    @server.resource(
        RUN_URI,
        name="run",
        title="A run's record",
        description="The record of run {run_id} (as GET /v1/runs/{id} gives it): status, output, steps, usage",
        mime_type="application/json",
    )
    async def run_record(run_id: str, ctx: Context[Any, Any]) -> str:
        try:
            record = await state().runs.get(run_id, request_access(ctx.request_context.request))
        except RunNotFoundError as exc:
            raise ResourceNotFoundError(exc.detail) from None
        return record_json(record).decode()

    followers = RunFollowers(state)
    lowlevel = server._lowlevel_server  # MCPServer serves no resources/subscribe of its own (no public accessor)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, followers.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, followers.unsubscribe)


class RunFollowers:
    """The subscriptions of the front door's sessions to runs: a task per (session, URI) that follows the run's
    events in the run store (any gateway process's run) and notifies the session of each."""

    def __init__(self, state: Callable[[], BridgeState]) -> None:
        self._state = state
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        run_id = run_id_of(uri)
        runs = self._state().runs
        try:
            access = request_access(ctx.request)
            await runs.get(run_id, access)  # the key's own run (else not found), before anything is followed
            last = await self._state().store.last_event(run_id)
            events = await runs.events(run_id, last.seq if last is not None else 0, access)
        except RunNotFoundError as exc:
            raise MCPError(code=INVALID_PARAMS, message=exc.detail, data={"uri": uri}) from None
        key = (id(ctx.session), uri)
        self._stop(key)
        session = ctx.session

        async def follow() -> None:
            try:
                async for _ in events:
                    await session.send_resource_updated(uri)
            except Exception as exc:  # the session went away: the subscription ends with it
                log.debug("subscription to %s ended: %r", uri, exc)
            finally:
                if self._tasks.get(key) is task:
                    del self._tasks[key]

        task = asyncio.create_task(follow(), name=f"subscription {uri}")
        self._tasks[key] = task
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        self._stop((id(ctx.session), str(params.uri)))
        return EmptyResult()

    def _stop(self, key: tuple[int, str]) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()


def run_id_of(uri: str) -> str:
    """The run id of a `run://{run_id}` URI; anything else is JSON-RPC's invalid params."""
    run_id = uri.removeprefix(RUN_SCHEME) if uri.startswith(RUN_SCHEME) else ""
    if not run_id or "/" in run_id:
        raise MCPError(code=INVALID_PARAMS, message=f"Only run://{{run_id}} can be subscribed to, not {uri!r}")
    return run_id
