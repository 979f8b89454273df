"""A server's resources and prompts: listed (every page, cached per connection until the server says its list
changed), a resource read as text, a prompt rendered as chat messages.

The dataclasses are also the HTTP response models. The SDK is imported by the functions that talk to a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from pydantic import Field

from services.errors import MCPRequestError, MCPServerUnavailableError, MCPToolTimeoutError

if TYPE_CHECKING:
    import mcp_types as mtypes

    from services.mcp.connection import Connection

_MAX_PAGES = 100


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One resource a server offers."""

    uri: str
    name: str
    description: str | None = None
    mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class PromptArgument:
    name: str
    description: str | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class PromptInfo:
    """One prompt a server offers: a template a run can start from (POST /v1/prompts/{server}/{prompt}/run)."""

    server: Annotated[str, Field(description="The server's name in mcp.json")]
    name: str
    description: str | None = None
    arguments: list[PromptArgument] | None = None


async def _asked(conn: Connection, timeout_s: float, what: str, request: Any) -> Any:
    """One request of a live connection, within `timeout_s`; the server's errors become domain errors."""
    from mcp import MCPError

    session = conn.session
    if session is None:
        raise MCPServerUnavailableError(f"MCP server {conn.cfg.name!r} closed the connection")
    try:
        with anyio.fail_after(timeout_s):
            return await request(session)
    except TimeoutError:
        raise MCPToolTimeoutError(f"MCP server {conn.cfg.name!r} did not answer {what} within {timeout_s:g}s") from None
    except MCPError as exc:
        raise MCPRequestError(
            f"MCP server {conn.cfg.name!r} refused {what}: {exc.message}", server=conn.cfg.name
        ) from None


def _offers(conn: Connection, capability: str) -> bool:
    session = conn.session
    caps = session.server_capabilities if session is not None else None
    return caps is not None and getattr(caps, capability, None) is not None


async def resources_of(conn: Connection, timeout_s: float) -> list[ResourceInfo]:
    """The server's resources (none when it does not offer the capability); cached on the connection."""
    if conn.resources is not None:
        return conn.resources
    listed: list[ResourceInfo] = []
    if _offers(conn, "resources"):
        import mcp_types as mtypes

        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            params = mtypes.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await _asked(conn, timeout_s, "resources/list", lambda s, p=params: s.list_resources(params=p))
            listed += [ResourceInfo(r.uri, r.name, r.description, r.mime_type) for r in page.resources]
            if not (cursor := page.next_cursor):
                break
    conn.resources = listed
    return listed


async def read_resource(conn: Connection, uri: str, timeout_s: float) -> str:
    """The resource's contents as text (binary contents are described, not inlined)."""
    result = await _asked(conn, timeout_s, f"resources/read of {uri!r}", lambda s: s.read_resource(uri))
    return "\n".join(_content_text(c) for c in result.contents)


def _content_text(contents: Any) -> str:
    text = getattr(contents, "text", None)
    if isinstance(text, str):
        return text
    return f"[binary resource {contents.uri} {contents.mime_type or ''}]".replace(" ]", "]")


async def prompts_of(conn: Connection, timeout_s: float) -> list[PromptInfo]:
    """The server's prompts (none when it does not offer the capability)."""
    if not _offers(conn, "prompts"):
        return []
    import mcp_types as mtypes

    listed: list[PromptInfo] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params = mtypes.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await _asked(conn, timeout_s, "prompts/list", lambda s, p=params: s.list_prompts(params=p))
        for p in page.prompts:
            args = [PromptArgument(a.name, a.description, bool(a.required)) for a in p.arguments or []]
            listed.append(PromptInfo(conn.cfg.name, p.name, p.description, args or None))
        if not (cursor := page.next_cursor):
            break
    return listed


async def prompt_messages(
    conn: Connection, name: str, arguments: dict[str, str], timeout_s: float
) -> list[dict[str, Any]]:
    """The prompt rendered by its server, as chat messages (text; other content is described)."""
    result: mtypes.GetPromptResult = await _asked(
        conn, timeout_s, f"prompts/get of {name!r}", lambda s: s.get_prompt(name, arguments or None)
    )
    return [{"role": m.role, "content": _block_text(m.content)} for m in result.messages]


def _block_text(block: Any) -> str:
    if getattr(block, "type", None) == "text":
        return str(block.text)
    if getattr(block, "type", None) == "resource":
        return _content_text(block.resource)
    if getattr(block, "type", None) == "resource_link":
        return f"[resource {block.uri}]"
    return f"[{getattr(block, 'type', 'content')} {getattr(block, 'mime_type', '') or ''}]".replace(" ]", "]")


def listing_text(server: str, resources: list[ResourceInfo]) -> str:
    """What the model reads of a server's resources: one JSON object a line."""
    if not resources:
        return f"MCP server {server!r} offers no resources"
    return "\n".join(
        json.dumps(
            {"server": server, "uri": r.uri, "name": r.name, "description": r.description, "mime_type": r.mime_type}
        )
        for r in resources
    )
