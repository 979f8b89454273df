"""A person's OAuth login to a remote MCP server (`lmstudio-bridge auth <server>`): authorization code with
PKCE through the MCP SDK's client, the authorization server's answer taken by a one-shot callback server on
127.0.0.1; the tokens end in the run store, where the gateway finds them. A client-credentials server is
only checked (a token is fetched, the server lists its tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.mcp.oauth import ServerAuth

CALLBACK_PATH = "/callback"
_DONE_PAGE = "lmstudio-bridge: logged in to {name}. You can close this page."
_FAILED_PAGE = "lmstudio-bridge: the login to {name} failed: {why}"


class LoginFailed(Exception):
    """The login did not end with a token the server accepts (the message says why)."""


async def log_in(auth: ServerAuth, show_link: Callable[[str], Awaitable[None]], timeout_s: float) -> list[str]:
    """Log in (a new login: the server's stored tokens are dropped first) and return the server's tool names."""
    from aiohttp import web

    from services.mcp.oauth_provider import build_provider

    name = auth.cfg.name
    await auth.tokens.forget()
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        from mcp.shared.auth import AuthorizationCodeResult

        query = request.query
        if answer.done():
            return web.Response(status=409, text="lmstudio-bridge: this login has already been answered")
        if "code" not in query:
            why = f"{query.get('error', 'no code')}: {query.get('error_description', '')}".rstrip(": ")
            answer.set_exception(LoginFailed(f"the authorization server answered {why}"))
            return web.Response(status=400, text=_FAILED_PAGE.format(name=name, why=why))
        answer.set_result(AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss")))
        return web.Response(text=_DONE_PAGE.format(name=name))

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)  # the callback's query holds the authorization code
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", auth.oauth.redirect_port)
        await site.start()
        port = runner.addresses[0][1]
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        provider = build_provider(auth, redirect_uri=redirect_uri, show_link=show_link, wait_callback=lambda: answer)
        async with asyncio.timeout(timeout_s):
            return await _connect(auth, provider)
    except TimeoutError:
        raise LoginFailed(f"no login within {timeout_s:g}s") from None
    finally:
        await runner.cleanup()


async def _connect(auth: ServerAuth, provider: Any) -> list[str]:
    """Open a session with `provider` (a 401 starts the login), list the tools; the server must accept the token."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    assert auth.cfg.url is not None
    async with (
        httpx2.AsyncClient(headers=auth.cfg.headers, auth=provider, timeout=30.0) as client,
        streamable_http_client(auth.cfg.url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        try:
            await session.initialize()
            tools = await session.list_tools()
        except Exception as exc:
            raise LoginFailed(auth.problem or f"{type(exc).__name__}: {exc}") from None
    if auth.problem:
        raise LoginFailed(auth.problem)
    return [tool.name for tool in tools.tools]
