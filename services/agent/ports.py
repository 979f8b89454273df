"""What a run needs of LM Studio, the model catalog and the MCP pool: the narrow faces the agent is typed by.

`LMStudioHosts`, `ModelCatalog` and `MCPPool` are the production implementations; tests hand in fakes.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.context import ContextWindow
from services.lmstudio import ChatResult, ModelKind, ResolvedModel
from services.mcp import ToolResult, ToolSet, ToolSpec
from services.mcp.resources import ResourceInfo


class Engine(Protocol):
    """LM Studio as a run sees it: chat calls on some host, and an unload for pipelines."""

    @property
    def reports_load_state(self) -> bool: ...

    def check(self) -> None: ...

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult: ...

    async def unload_model(self, key: str, host: str | None = None) -> dict[str, Any]: ...


class Models(Protocol):
    """The model catalog as a run sees it: resolve a name, know a model's window."""

    aliases: dict[str, str]

    async def resolve(self, requested: str | None, *, kind: ModelKind = "chat") -> ResolvedModel: ...

    def invalidate(self) -> None: ...

    def window_of(self, model_id: str) -> ContextWindow: ...

    def learn_window(self, model_id: str, tokens: int) -> ContextWindow: ...


class Tools(Protocol):
    """The MCP pool as a run sees it: servers' tools and one call at a time."""

    def names(self) -> list[str]: ...

    async def list_tools(self, server: str) -> list[ToolSpec]: ...

    async def tool_set(self, servers: list[str]) -> ToolSet: ...

    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
        text_checked: bool = False,
    ) -> ToolResult: ...

    async def list_resources(self, server: str) -> list[ResourceInfo]: ...

    async def read_resource(self, server: str, uri: str) -> str: ...
