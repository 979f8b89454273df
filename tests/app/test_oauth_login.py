"""OAuth toward a remote MCP server, through the whole gateway: a real authorization server in front of a
streamable HTTP MCP server (tests/mcp_servers/oauth_server.py), `lmstudio-bridge auth` run as a process and
driven as a browser would, then runs and direct calls using the server's tools, refresh, revocation showing
`needs_login`; no token in the logs, the store's rows or the answers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runs.engines import async_engine
from services.runs.tables import metadata
from tests.conftest import app_client, make_settings, store_url
from tests.helpers import REPO, call, script
from tests.mcp_servers.oauth_server import MemoryAuthProvider, oauth_mcp_server
from tests.mock_lmstudio.fixture import MockLMStudio

LOGIN_TIMEOUT_S = 60.0


async def log_in(env: dict[str, str], provider: MemoryAuthProvider) -> str:
    """`lmstudio-bridge auth remote` as a person runs it: open the printed link in a 'browser' (follow the
    redirects to the local callback); returns what the command printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "auth", "remote", "--timeout-s", "60",
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    stderr = process.stderr
    printed: list[str] = []
    try:
        async with asyncio.timeout(LOGIN_TIMEOUT_S):
            while not (link := next((ln.strip() for ln in printed if ln.strip().startswith("http")), None)):
                line = (await process.stdout.readline()).decode()
                assert line, f"auth ended before printing a link: {printed} {(await stderr.read())!r}"
                printed.append(line)
            async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
                page = await browser.get(link)
            assert page.status_code == 200 and "logged in to remote" in page.text, page.text
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    return "".join(printed) + out.decode() + err.decode()


async def store_text(engine: AsyncEngine) -> str:
    """Every row of every table of the run store, as text."""
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        rows = [
            " ".join(map(str, row))
            for table in metadata.sorted_tables
            if table.name in names
            for row in (await conn.execute(select(table))).all()
        ]
    return "\n".join(rows)


async def tool(client: httpx.AsyncClient, name: str, answers: list[str], **arguments: Any) -> httpx.Response:
    response = await client.post(f"/v1/mcp/servers/remote/tools/{name}", json=arguments)
    answers.append(response.text)
    return response


async def servers_and_readiness(client: httpx.AsyncClient, answers: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    listed = await client.get("/v1/mcp/servers")
    ready = await client.get("/readyz")
    answers += [listed.text, ready.text]
    server = next(s for s in listed.json()["data"] if s["name"] == "remote")
    readiness = next(s for s in ready.json()["mcp"]["servers"] if s["name"] == "remote")
    return server, readiness


async def test_a_person_logs_in_and_the_gateway_uses_refreshes_and_loses_the_token(
    mock: MockLMStudio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    async with oauth_mcp_server() as (url, provider):
        mcp_json = tmp_path / "mcp.json"
        mcp_json.write_text(
            json.dumps({"mcpServers": {"remote": {"url": url, "bridge": {"oauth": {"scopes": ["tools"]}}}}})
        )
        key, database = Fernet.generate_key().decode(), store_url()
        settings = make_settings(
            lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), database_url=database, token_key=key
        )
        env = {**os.environ, "MCP_CONFIG": str(mcp_json), "BRIDGE_DATABASE_URL": database, "BRIDGE_TOKEN_KEY": key}
        async with app_client(settings) as client:
            server, readiness = await servers_and_readiness(client, answers)
            assert server["status"] == readiness["status"] == "needs_login", server
            assert "lmstudio-bridge auth remote" in server["last_error"], server
            refused = await tool(client, "whoami", answers)
            assert refused.status_code == 503 and "lmstudio-bridge auth remote" in refused.json()["detail"]

            printed = await log_in(env, provider)  # while the gateway runs, on its store
            assert "logged in to 'remote': 2 tools" in printed, printed
            assert provider.grants == {"authorization_code": 1}
            server, readiness = await servers_and_readiness(client, answers)
            assert server["status"] != "needs_login" and readiness["status"] != "needs_login", server

            whoami = await tool(client, "whoami", answers)
            assert whoami.status_code == 200 and whoami.json()["content"][0]["text"].startswith("client "), whoami.text
            run = await client.post(
                "/v1/autonomous",
                json={
                    "task": "say hi " + script(calls=[[call("remote__echo", {"text": "hi"})]]),
                    "mcp_servers": ["remote"],
                },
            )
            answers.append(run.text)
            assert run.status_code == 200 and run.json()["steps"][0]["output"] == "echo: hi", run.text

            provider.expire_access()  # the server now says 401: one refresh, one retry
            assert (await tool(client, "echo", answers, text="a")).json()["content"][0]["text"] == "echo: a"
            assert provider.grants["refresh_token"] == 1

            provider.access_ttl_s = 30  # the next token lives less than the refresh margin (60 s)
            provider.expire_access()
            await tool(client, "echo", answers, text="b")
            assert provider.grants["refresh_token"] == 2
            provider.access_ttl_s = 3600
            await tool(client, "echo", answers, text="c")  # refreshed before use: the server never refused it
            assert provider.grants["refresh_token"] == 3
            await tool(client, "echo", answers, text="d")
            assert provider.grants["refresh_token"] == 3

            provider.revoke_all()  # a person revoked the gateway's access
            lost = await tool(client, "echo", answers, text="e")
            assert lost.status_code == 503 and "lmstudio-bridge auth remote" in lost.json()["detail"], lost.text
            server, readiness = await servers_and_readiness(client, answers)
            assert server["status"] == readiness["status"] == "needs_login", (server, readiness)
            assert "lmstudio-bridge auth remote" in readiness["last_error"], readiness

        engine = async_engine(database)
        try:
            stored = await store_text(engine)
        finally:
            await engine.dispose()
    assert "remote" in stored  # the tokens' row is there, sealed
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {logging.Formatter().formatException(r.exc_info) if r.exc_info else ''}"
        for r in caplog.records
    )
    secrets = [*provider.issued, *(c.client_secret for c in provider.clients.values() if c.client_secret)]
    assert len(provider.issued) >= 8
    for secret in secrets:
        assert secret not in stored, "a token in the run store"
        assert secret not in logged, "a token in the logs"
        assert not any(secret in answer for answer in answers), "a token in an answer"
