"""What the gateway can serve right now: readiness, models and MCP servers, for REST and the MCP front door."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from services.access import Access
from services.limits import RunLimiter
from services.lmstudio import LMStudioHosts, ModelCatalog, ModelEntry
from services.mcp import MCPPool, ServerStatus, ToolSpec
from services.runs.writer import StoreHealth


@dataclass(slots=True, kw_only=True)
class ModelList:
    """LM Studio's models in the OpenAI list shape, with the gateway's extras."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]
    aliases: Annotated[dict[str, str], Field(description="BRIDGE_MODEL_ALIASES")]
    stale: Annotated[bool, Field(description="LM Studio did not answer; this is the last list it gave")]


@dataclass(slots=True)
class ServerList:
    """The servers of mcp.json (secret-free)."""

    data: list[ServerStatus]
    config_path: Annotated[str | None, Field(description="The mcp.json in use; null when none was found")]


@dataclass(slots=True)
class HostReadiness:
    """One LM Studio host: whether it answered its ping and may take calls."""

    name: Annotated[str, Field(description="Its name in LMSTUDIO_HOSTS_FILE, else its URL")]
    url: str
    ok: bool
    breaker: Annotated[str | None, Field(description="closed, open or half_open")]
    in_flight: Annotated[int, Field(description="LM Studio calls (and open streams) now on this host")] = 0
    error: str | None = None
    code: Annotated[str | None, Field(description="The problem code the host's failure maps to")] = None

    @property
    def ready(self) -> bool:
        return self.ok and self.breaker != "open"


@dataclass(slots=True)
class LMStudioReadiness:
    """Every LM Studio host; `ok` while at least one can serve. With one host, its own fields."""

    url: Annotated[str, Field(description="The hosts' URLs, comma-separated")]
    ok: bool
    breaker: Annotated[str | None, Field(description="closed, open or half_open (the best state of any host)")]
    error: str | None = None
    code: Annotated[str | None, Field(description="The problem code LM Studio's failure maps to")] = None
    hosts: list[HostReadiness] = field(default_factory=list)


@dataclass(slots=True)
class ServerReadiness:
    name: str
    status: str
    breaker: str
    last_error: str | None


@dataclass(slots=True)
class MCPReadiness:
    config_path: Annotated[str | None, Field(description="The mcp.json in use; null when none was found")]
    servers: list[ServerReadiness]
    note: str | None = None


@dataclass(slots=True)
class Readiness:
    """Ready while one LM Studio host answers and its breaker is not open, and the run store takes writes; MCP
    servers are reported, not required."""

    status: Literal["ready", "not_ready"]
    lmstudio: LMStudioReadiness
    mcp: MCPReadiness
    runs_in_flight: int = 0
    store: Annotated[
        StoreHealth | None, Field(description="The run store: `ok` while it takes writes (not ready otherwise)")
    ] = None


class StatusService:
    """Readiness and listings, computed once for every front door."""

    def __init__(
        self,
        lmstudio: LMStudioHosts,
        catalog: ModelCatalog,
        pool: MCPPool,
        limiter: RunLimiter,
        mcp_config_path: Path | None,
        store: Callable[[], StoreHealth] | None = None,
        scores: Mapping[str, float] | None = None,
    ) -> None:
        self.scores = scores if scores is not None else {}  # each model's newest tool_score (the eval service's)
        self.lmstudio = lmstudio
        self.catalog = catalog
        self.pool = pool
        self.limiter = limiter
        self.config_path = str(mcp_config_path) if mcp_config_path else None
        self.store = store

    async def models(self, access: Access | None = None) -> ModelList:
        """The model list (cached per MODEL_CACHE_TTL_S), the default one marked; only what `access` may use."""
        snap = await self.catalog.snapshot()
        models = self.lmstudio.as_now(snap.models)  # a host seen down since the list was cached: unreachable now
        snap = replace(snap, models=tuple(models), by_id={m.id: m for m in models})
        entries, aliases = self.catalog.entries(snap), self.catalog.aliases
        entries = [replace(e, tool_score=self.scores[e.id]) if e.id in self.scores else e for e in entries]
        if access is not None:
            entries = [e for e in entries if access.model_allowed(e.id, aliases)]
            aliases = {alias: model for alias, model in aliases.items() if access.model_allowed(model, aliases)}
        return ModelList(data=entries, aliases=aliases, stale=snap.stale)

    async def servers(self, access: Access | None = None) -> ServerList:
        """Every configured MCP server (that `access` may use) with its status (a server waiting for an OAuth
        login: had it one since?)."""
        await self.pool.recheck_logins()
        servers = self.pool.status()
        if access is not None:
            servers = [s for s in servers if access.reaches(s.name)]
        return ServerList(data=servers, config_path=self.config_path)

    async def tools(self, server: str, access: Access | None = None) -> list[ToolSpec]:
        """A server's tools (that `access` may use); starts the server if needed."""
        if access is not None:
            access.check_servers([server])
        tools = await self.pool.list_tools(server)
        return [t for t in tools if access is None or access.tool_allowed(server, t.name)]

    async def readiness(self) -> Readiness:
        """Ping every LM Studio host and report every MCP server (a server waiting for a login: had it one?)."""
        await self.pool.recheck_logins()
        lmstudio = await self._lmstudio_readiness()
        servers = [ServerReadiness(s.name, s.status, s.breaker, s.last_error) for s in self.pool.status()]
        mcp = MCPReadiness(config_path=self.config_path, servers=servers)
        if not servers:
            mcp.note = (
                "no MCP servers configured (no mcp.json found)"
                if self.config_path is None
                else ("mcp.json lists no servers")
            )
        store = self.store() if self.store is not None else None
        ready = lmstudio.ok and lmstudio.breaker != "open" and (store is None or store.ok)
        return Readiness("ready" if ready else "not_ready", lmstudio, mcp, self.limiter.in_flight, store)

    async def _lmstudio_readiness(self) -> LMStudioReadiness:
        hosts = []
        for host, error in await self.lmstudio.readiness():
            breaker = host.client.breaker
            state = breaker.state if breaker else None
            one = HostReadiness(host.name, host.spec.url, error is None, state, in_flight=host.in_flight)
            if error is not None:
                one.error, one.code = error.detail, error.code
            hosts.append(one)
        if len(hosts) == 1:
            only = hosts[0]
            return LMStudioReadiness(only.url, only.ok, only.breaker, only.error, only.code, hosts)
        ready = [h for h in hosts if h.ready]
        states = {h.breaker for h in hosts}
        best = next((s for s in ("closed", "half_open", "open") if s in states), None)
        summary = LMStudioReadiness(", ".join(h.url for h in hosts), bool(ready), best, hosts=hosts)
        if not ready:
            summary.error = "; ".join(f"{h.name}: {h.error or 'circuit open'}" for h in hosts)
            summary.code = "upstream_unavailable"
        return summary
