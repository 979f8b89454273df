"""`lmstudio-bridge auth <server>`: a person's OAuth login to a remote MCP server of mcp.json. Prints the
authorization link, takes the answer on a local callback (127.0.0.1), and stores the tokens sealed in the run
store, where the gateway (a running one on the same store too) finds them (docs/configuration.md, "Remote
servers with OAuth")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from app.gateway import load_mcp
from app.oauth_setup import build_oauth
from app.settings import Settings, load_settings
from app.store_setup import check_store_location
from app.telemetry import configure_logging
from services.mcp import MCPServerConfig

DEFAULT_LOGIN_TIMEOUT_S = 300.0


def _usable(settings: Settings, servers: dict[str, MCPServerConfig], name: str) -> MCPServerConfig | str:
    cfg = servers.get(name)
    if cfg is None:
        return f"no MCP server {name!r} in mcp.json (servers: {', '.join(servers) or 'none'})"
    if cfg.oauth is None:
        return f"MCP server {name!r} has no OAuth settings (bridge.oauth in mcp.json)"
    if not settings.token_key:
        return "BRIDGE_TOKEN_KEY is not set: OAuth tokens are stored only sealed with it"
    return cfg


async def _log_in(settings: Settings, cfg: MCPServerConfig, timeout_s: float) -> int:
    from services.mcp.oauth_login import LoginFailed, log_in
    from services.runs.engines import async_engine
    from services.runs.migrate import migrate

    async def show(link: str) -> None:
        print(f"Open this link to log in to {cfg.name!r}:\n\n  {link}\n", flush=True)
        print("Waiting for the login ...", flush=True)

    engine = async_engine(settings.database_url)
    try:
        await migrate(engine)
        auth = build_oauth(settings, {cfg.name: cfg}, engine).for_server(cfg)
        assert auth is not None
        tools = await log_in(auth, show, timeout_s)
    except LoginFailed as exc:
        print(f"login to {cfg.name!r} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"logged in to {cfg.name!r}: {len(tools)} tools ({', '.join(tools[:8])}{', ...' if len(tools) > 8 else ''})")
    return 0


def auth_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_store_location(settings)
    mcp = load_mcp(settings)
    configure_logging("WARNING", mcp.secret_values())
    cfg = _usable(settings, mcp.servers, args.server)
    if isinstance(cfg, str):
        print(f"auth: {cfg}", file=sys.stderr)
        return 2
    return asyncio.run(_log_in(settings, cfg, args.timeout_s))


def add_auth_parser(sub: Any) -> None:
    p = sub.add_parser("auth", help="log in to a remote MCP server that requires OAuth (prints the link)")
    p.add_argument("server", help="the server's name in mcp.json")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_LOGIN_TIMEOUT_S, help="how long to wait for the login")
    p.set_defaults(func=auth_command)
