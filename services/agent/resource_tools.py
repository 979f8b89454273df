"""Servers' resources for the model: the built-in tools `bridge__list_resources` and `bridge__read_resource`,
offered when a run's server offers resources (and the request does not name its tools), answered here. What
the model reads is a tool output like any other: cut to fit the context window, read further with
`bridge__read_output`."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from services.agent.builtin_tools import LIST_RESOURCES, READ_RESOURCE, resource_tools
from services.errors import BridgeError
from services.mcp.resources import ResourceInfo, listing_text

RESOURCE_TOOLS = frozenset({LIST_RESOURCES, READ_RESOURCE})


class Resources(Protocol):
    """What the resource tools need of the MCP pool."""

    async def list_resources(self, server: str) -> list[ResourceInfo]: ...

    async def read_resource(self, server: str, uri: str) -> str: ...


async def offered_resources(
    pool: Resources, servers: list[str], allowed_tools: list[str] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The resource tools to offer and the servers they reach: those of the run's servers that list resources (a
    server that cannot list them is left out; the run goes on)."""
    if allowed_tools is not None or not servers:
        return [], []

    async def has(server: str) -> bool:
        try:
            return bool(await pool.list_resources(server))
        except BridgeError:
            return False

    found = await asyncio.gather(*(has(s) for s in servers))
    with_resources = [s for s, yes in zip(servers, found, strict=True) if yes]
    return (resource_tools(with_resources) if with_resources else []), with_resources


async def answer(pool: Resources, servers: list[str], name: str, raw_arguments: str) -> str:
    """The output of a resource tool call (an "Error: ..." text when it cannot be answered)."""
    try:
        arguments = json.loads(raw_arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return "Error: the arguments must be a JSON object"
    server = arguments.get("server")
    if server is not None and server not in servers:
        return f"Error: server must be one of {', '.join(servers)}"
    try:
        if name == LIST_RESOURCES:
            chosen = [server] if server else servers
            return "\n".join([listing_text(s, await pool.list_resources(s)) for s in chosen])
        uri = arguments.get("uri")
        if not isinstance(server, str) or not isinstance(uri, str) or not uri:
            return "Error: give the server and the uri of the resource"
        return await pool.read_resource(server, uri)
    except BridgeError as exc:
        return f"Error: {exc.detail}"
