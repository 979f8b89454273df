"""`lmstudio-bridge serve | check`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from app.lifespan import build_lmstudio
from app.main import load_settings
from app.settings import Settings
from services.errors import LLMError


def serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


async def _check(settings: Settings) -> bool:
    ok = True
    lmstudio = build_lmstudio(settings)
    try:
        models = await lmstudio.list_models()
        chat = [m.id for m in models if m.can_chat]
        print(f"[ok]   LM Studio at {settings.lmstudio_base_url} ({lmstudio.models_api} API): {len(models)} models")
        print(f"       chat models: {', '.join(chat) or '(none)'}")
    except LLMError as exc:
        ok = False
        print(f"[fail] LM Studio at {settings.lmstudio_base_url}: {exc.detail}")
    finally:
        await lmstudio.aclose()
    return ok


def check(args: argparse.Namespace) -> int:
    """Config valid, LM Studio reachable, every MCP server starts and lists its tools."""
    settings = load_settings()
    print("[ok]   configuration is valid")
    return 0 if asyncio.run(_check(settings)) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmstudio-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP gateway")
    p_serve.add_argument("--host", help="bind address (default BRIDGE_HOST or 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (default BRIDGE_PORT or 8000)")
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check", help="check configuration, LM Studio and every MCP server")
    p_check.set_defaults(func=check)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
