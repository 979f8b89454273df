"""Servers' prompts as run templates: listed within an API key's server scope (GET /v1/prompts), and rendered by
their server into the conversation a run starts from (POST /v1/prompts/{server}/{prompt}/run)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from pydantic import Field

from services.access import Access
from services.errors import BridgeError
from services.mcp.resources import PromptInfo


class Prompts(Protocol):
    """What prompts need of the MCP pool."""

    def names(self) -> list[str]: ...

    async def list_prompts(self, server: str) -> list[PromptInfo]: ...

    async def prompt_messages(self, server: str, name: str, arguments: dict[str, str]) -> list[dict[str, Any]]: ...


@dataclass
class PromptList:
    """The prompts of the servers the API key may use."""

    data: list[PromptInfo]
    unavailable: Annotated[dict[str, str], Field(description="Servers whose prompts could not be listed, and why")] = (
        field(default_factory=dict)
    )


async def list_prompts(pool: Prompts, access: Access | None, server: str | None = None) -> PromptList:
    """The prompts of every enabled server the key may use (or of `server`); each server is started if needed,
    and one that fails is named in `unavailable`."""
    if server is not None:
        if access is not None:
            access.check_servers([server])
        return PromptList(await pool.list_prompts(server))
    servers = [s for s in pool.names() if access is None or access.server_allowed(s)]
    results = await asyncio.gather(*(pool.list_prompts(s) for s in servers), return_exceptions=True)
    listing = PromptList([])
    for name, result in zip(servers, results, strict=True):
        if isinstance(result, BridgeError):
            listing.unavailable[name] = result.detail
        elif isinstance(result, BaseException):
            raise result
        else:
            listing.data.extend(result)
    return listing


async def prompt_conversation(
    pool: Prompts, access: Access | None, server: str, name: str, arguments: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    """The run's task (the prompt's last user text, for the record) and its messages, as the server rendered them."""
    if access is not None:
        access.check_servers([server])
    messages = await pool.prompt_messages(server, name, arguments)
    users = [m["content"] for m in messages if m["role"] == "user" and m["content"]]
    return (users[-1] if users else f"prompt {name!r} of MCP server {server!r}"), messages
