"""OAuth toward remote MCP servers, as the settings allow it: the servers' tokens sealed in the run store's
database under BRIDGE_TOKEN_KEY (docs/configuration.md, "Remote servers with OAuth")."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from services.mcp import MCPServerConfig
from services.mcp.oauth import OAuthClients


def without_token_key(cfg: MCPServerConfig) -> MCPServerConfig:
    """A server with `bridge.oauth` when BRIDGE_TOKEN_KEY is unset: disabled, saying why."""
    if cfg.oauth is None or cfg.disabled:
        return cfg
    why = "bridge.oauth needs BRIDGE_TOKEN_KEY (the key its OAuth tokens are sealed with in the run store)"
    return replace(cfg, disabled=True, unusable=why)


def build_oauth(settings: Settings, servers: dict[str, MCPServerConfig], engine: AsyncEngine) -> OAuthClients:
    """The remote servers' OAuth over the run store's database (`cryptography` loads only when a server uses
    OAuth and BRIDGE_TOKEN_KEY is set)."""
    if not (settings.token_key and any(cfg.oauth is not None for cfg in servers.values())):
        return OAuthClients(None)
    from services.runs.oauth_tokens import TokenVault

    vault = TokenVault(engine, [key.get_secret_value() for key in settings.token_key])
    return OAuthClients(vault, settings.oauth_refresh_margin_s)
