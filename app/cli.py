"""`lmstudio-bridge serve | check | mcp | runs | eval | auth`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from app.auth_cli import add_auth_parser
from app.eval_cli import add_eval_parser
from app.gateway import BridgeState, MCPSetup, all_secrets, load_hosts, load_mcp, open_gateway
from app.runs_cli import add_runs_parser
from app.server import run_server
from app.settings import Settings, load_settings, unknown_variables, warn_unknown_variables
from app.store_setup import check_store_location, stdio_store
from app.telemetry import configure_logging
from services.errors import BridgeError, LLMError


def serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    if (args.require_auth or settings.require_auth) and not (settings.api_keys or settings.keys_file):
        print("--require-auth: refusing to start without BRIDGE_API_KEYS or BRIDGE_KEYS_FILE", file=sys.stderr)
        return 2
    check_store_location(settings)
    return run_server(settings, args.host or settings.host, args.port or settings.port)


async def _check(settings: Settings, mcp_setup: MCPSetup) -> bool:
    async with open_gateway(settings, mcp_setup, warmup=False) as gateway:
        ok = await _check_lmstudio(gateway)
        if mcp_setup.path is None:
            print("[warn] no mcp.json found (MCP_CONFIG, ./mcp.json, ~/.lmstudio/mcp.json): runs will have no tools")
            return ok
        print(f"[ok]   {mcp_setup.path}: {len(mcp_setup.servers)} server(s)")
        return await _check_servers(gateway) and ok


async def _check_servers(gateway: BridgeState) -> bool:
    ok = True
    for status in gateway.pool.status():
        if status.transport == "unknown":  # an entry the gateway cannot use: disabled, and a failed check
            ok = False
            print(f"[fail] {status.name}: disabled: {status.last_error}")
            continue
        if status.status == "disabled":
            print(f"[skip] {status.name}: {status.last_error or 'disabled in mcp.json'}")
            continue
        try:
            tools = await gateway.pool.list_tools(status.name)
            names = ", ".join(t.name for t in tools[:8]) + (", ..." if len(tools) > 8 else "")
            print(f"[ok]   {status.name}: {len(tools)} tools ({names})")
        except BridgeError as exc:
            ok = False
            print(f"[fail] {status.name}: {exc.detail}")
    return ok


async def _check_lmstudio(gateway: BridgeState) -> bool:
    """Every LM Studio host lists its models; one host that does not is a failure."""
    hosts = gateway.lmstudio.hosts
    listed = await asyncio.gather(*(h.client.list_models() for h in hosts), return_exceptions=True)
    ok = True
    for host, models in zip(hosts, listed, strict=True):
        url = host.spec.url
        where = f"LM Studio at {url}" if host.name == url else f"LM Studio host {host.name!r} at {url}"
        if isinstance(models, LLMError):
            ok = False
            print(f"[fail] {where}: {models.detail}")
            continue
        if isinstance(models, BaseException):
            raise models
        chat = [m.id for m in models if m.can_chat]
        print(f"[ok]   {where} ({host.client.models_api} API): {len(models)} models")
        print(f"       chat models: {', '.join(chat) or '(none)'}")
    return ok


async def serve_stdio(settings: Settings, mcp_setup: MCPSetup) -> None:
    """Serve the MCP front door's tools over stdin/stdout with the gateway's parts (no HTTP)."""
    from routers.mcp_front import build_mcp_server  # the MCP SDK: only this mode (and `/mcp`) loads it
    from routers.mcp_stdio import run_stdio

    async with open_gateway(settings, mcp_setup) as gateway:
        await run_stdio(build_mcp_server(settings, lambda: gateway))  # a broken line gets a parse error


def own_instance(settings: Settings, mode: str) -> Settings:
    """The settings with an instance id of this process's own (`<id>:<mode>-<pid>`): sharing the run store
    with a gateway of the same host, it must not take the gateway's runs as its own leftovers."""
    return settings.model_copy(update={"instance_id": f"{settings.instance_id}:{mode}-{os.getpid()}"})


def check(args: argparse.Namespace) -> int:
    """Config valid, LM Studio reachable, every MCP server starts and lists its tools."""
    settings = own_instance(load_settings(), "check")
    mcp_setup = load_mcp(settings)
    unknown = unknown_variables(os.environ)  # a typo'd setting fails the check: the gateway would ignore it
    for warning in unknown:
        print(f"[fail] {warning}")
    if not unknown:
        print("[ok]   configuration is valid")
    return 0 if asyncio.run(_check(settings, mcp_setup)) and not unknown else 1


def mcp(args: argparse.Namespace) -> int:
    """Serve the autonomous tools over stdio: stdout carries JSON-RPC only, logs go to stderr."""
    settings = own_instance(stdio_store(load_settings()), "mcp")
    check_store_location(settings)
    mcp_setup = load_mcp(settings)
    configure_logging(settings.log_level, all_secrets(settings, mcp_setup, load_hosts(settings)))  # stderr only
    warn_unknown_variables(os.environ)
    asyncio.run(serve_stdio(settings, mcp_setup))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmstudio-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP gateway")
    p_serve.add_argument("--host", help="bind address (default BRIDGE_HOST or 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (default BRIDGE_PORT or 8000)")
    p_serve.add_argument(
        "--require-auth", action="store_true", help="refuse to start without BRIDGE_API_KEYS (BRIDGE_REQUIRE_AUTH)"
    )
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check", help="check configuration, LM Studio and every MCP server")
    p_check.set_defaults(func=check)
    p_mcp = sub.add_parser("mcp", help="serve the autonomous tools as an MCP server over stdio (Claude Desktop)")
    p_mcp.set_defaults(func=mcp)
    add_runs_parser(sub)
    add_eval_parser(sub)
    add_auth_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
