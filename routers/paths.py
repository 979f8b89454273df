"""Paths: where the MCP front door is mounted (`MCP_PATH`, for app.front_door and routers.mcp_front alike);
names in a URL path (one that does not exist is 404, the same name in a body is 422)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.errors import MCPServerNotFoundError, ModelNotFoundError

MCP_PATH = "/mcp"  # the MCP front door's one route (streamable HTTP)


@contextmanager
def named_in_path() -> Iterator[None]:
    """Turn the services' 422 "no such server/model" into the 404 a path lookup answers."""
    try:
        yield
    except (MCPServerNotFoundError, ModelNotFoundError) as err:
        err.status = 404
        raise
