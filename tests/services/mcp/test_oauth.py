"""OAuth toward a remote MCP server, at the pool: the client-credentials grant against a real authorization
server (tests/mcp_servers/oauth_server.py), tokens sealed in the run store's database, renewed before expiry,
refreshed once after a 401, refused for another audience."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.errors import MCPServerUnavailableError
from services.mcp import MCPPool, MCPServerConfig
from services.mcp.oauth import OAuthClients
from services.mcp.oauth_config import OAuthConfig
from services.mcp.oauth_login import log_in
from services.runs.engines import async_engine
from services.runs.migrate import migrate
from services.runs.oauth_tokens import TokenVault
from services.runs.tables import oauth_tokens
from tests.mcp_servers.oauth_server import MACHINE_ID, MemoryAuthProvider, oauth_mcp_server

KEY = Fernet.generate_key().decode()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = async_engine(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def remote() -> AsyncIterator[tuple[str, MemoryAuthProvider]]:
    async with oauth_mcp_server() as served:
        yield served


def machine(url: str, provider: MemoryAuthProvider, **oauth: object) -> MCPServerConfig:
    settings = OAuthConfig(
        grant="client_credentials", client_id=MACHINE_ID, client_secret=provider.machine_secret, scopes=("tools",)
    )
    return MCPServerConfig(name="remote", transport="http", url=url, oauth=settings)


@contextlib.asynccontextmanager
async def pool_of(cfg: MCPServerConfig, engine: AsyncEngine, key: str = KEY) -> AsyncIterator[MCPPool]:
    """A gateway's pool of `cfg` with tokens sealed by `key` in `engine`'s store; closed on exit."""
    pool = MCPPool({cfg.name: cfg}, oauth=OAuthClients(TokenVault(engine, [key])), restart_backoff_s=0.01)
    try:
        yield pool
    finally:
        await pool.aclose()


async def sealed_rows(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [" ".join(map(str, row)) for row in (await conn.execute(select(oauth_tokens))).all()]


async def test_client_credentials_work_unattended_and_the_token_is_kept_sealed(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    cfg = machine(url, provider)
    async with pool_of(cfg, engine) as pool:
        result = await pool.call_tool("remote", "whoami", {})
        assert result.text == f"client {MACHINE_ID}" and not result.is_error, result
        assert provider.grants == {"client_credentials": 1}
        assert (await pool.call_tool("remote", "echo", {"text": "hi"})).text == "echo: hi"
        assert provider.grants["client_credentials"] == 1  # the token is reused
    rows = await sealed_rows(engine)
    assert len(rows) == 1 and rows[0].startswith("remote "), rows
    assert not any(secret in rows[0] for secret in [*provider.issued, provider.machine_secret])

    async with pool_of(cfg, engine) as again:  # a restarted gateway: the stored token, no new grant
        assert (await again.call_tool("remote", "whoami", {})).text == f"client {MACHINE_ID}"
        assert provider.grants["client_credentials"] == 1


async def test_a_token_near_its_expiry_is_renewed_before_it_is_used(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    provider.access_ttl_s = 30  # within the refresh margin (60 s) from the start
    async with pool_of(machine(url, provider), engine) as pool:
        await pool.call_tool("remote", "whoami", {})
        first = provider.grants["client_credentials"]
        provider.access_ttl_s = 3600
        seen = len(provider.issued)
        assert (await pool.call_tool("remote", "echo", {"text": "x"})).text == "echo: x"
        assert provider.grants["client_credentials"] == first + 1 and len(provider.issued) == seen + 1
        await pool.call_tool("remote", "echo", {"text": "y"})
        assert provider.grants["client_credentials"] == first + 1  # the long token is kept


async def test_an_expired_token_gets_a_new_one_after_the_servers_401(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    async with pool_of(machine(url, provider), engine) as pool:
        await pool.call_tool("remote", "whoami", {})
        provider.expire_access()  # the server says 401; the gateway did not expect it
        assert (await pool.call_tool("remote", "echo", {"text": "z"})).text == "echo: z"
        assert provider.grants["client_credentials"] == 2


async def test_a_token_for_another_audience_is_refused(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    provider.audience = "http://127.0.0.1:9/elsewhere"
    async with pool_of(machine(url, provider), engine) as pool:
        with pytest.raises(MCPServerUnavailableError) as raised:
            await pool.list_tools("remote")
        assert "refused the access token" in raised.value.detail, raised.value.detail
        status = pool.status()[0]
        assert status.status == "failed" and "refused" in (status.last_error or "")


async def test_tokens_sealed_with_another_key_are_not_used(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    cfg = machine(url, provider)
    async with pool_of(cfg, engine) as pool:
        await pool.call_tool("remote", "whoami", {})
    async with pool_of(cfg, engine, Fernet.generate_key().decode()) as other:  # the key changed: a new token is fetched
        assert (await other.call_tool("remote", "whoami", {})).text == f"client {MACHINE_ID}"
        assert provider.grants["client_credentials"] == 2


async def test_the_vault_seals_binds_to_the_url_and_forgets(database_url: str) -> None:
    engine = async_engine(database_url)
    try:
        await migrate(engine)
        vault = TokenVault(engine, [KEY])
        record = {"tokens": {"access_token": "secret-access", "token_type": "Bearer"}, "expires_at": 12.5}
        written = await vault.save("remote", "https://h/mcp", record)
        assert await vault.load("remote", "https://h/mcp") == (record, written)
        assert await vault.load("remote", "https://other/mcp") is None  # tokens of another URL are not used
        assert "secret-access" not in " ".join(await sealed_rows(engine))
        rotated = TokenVault(engine, [Fernet.generate_key().decode(), KEY])  # a new key first, the old one still opens
        assert (await rotated.load("remote", "https://h/mcp") or ({}, 0))[0] == record
        await rotated.save("remote", "https://h/mcp", record)
        assert await vault.load("remote", "https://h/mcp") is None  # sealed with the new key now
        await vault.forget("remote")
        assert await sealed_rows(engine) == []
    finally:
        await engine.dispose()


async def browse(link: str) -> None:
    """A person's browser: follow the authorization link's redirects to the login's local callback."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        page = await browser.get(link)
    assert page.status_code == 200 and "logged in" in page.text, page.text


async def test_replicas_share_the_tokens_and_a_rotated_refresh_token(
    remote: tuple[str, MemoryAuthProvider], engine: AsyncEngine
) -> None:
    url, provider = remote
    cfg = MCPServerConfig(name="remote", transport="http", url=url, oauth=OAuthConfig(scopes=("tools",)))
    person = OAuthClients(TokenVault(engine, [KEY])).for_server(cfg)
    assert person is not None
    opened: list[str] = []

    async def show(link: str) -> None:
        opened.append(link)
        asyncio.get_running_loop().create_task(browse(link))

    assert sorted(await log_in(person, show, 30)) == ["echo", "whoami"] and len(opened) == 1
    async with pool_of(cfg, engine) as one, pool_of(cfg, engine) as two:  # two replicas on one store
        for pool in (one, two):
            assert (await pool.call_tool("remote", "whoami", {})).text.startswith("client ")
        provider.expire_access()
        await one.call_tool("remote", "echo", {"text": "a"})  # refreshes; the old refresh token is revoked
        assert provider.grants["refresh_token"] == 1
        assert (await two.call_tool("remote", "echo", {"text": "b"})).text == "echo: b"  # uses the store's newer one
        assert provider.grants["refresh_token"] == 2
        assert [s.status for s in (*one.status(), *two.status())] == ["ready", "ready"]


async def test_a_server_whose_metadata_names_another_resource_gets_no_token(engine: AsyncEngine) -> None:
    async with (
        oauth_mcp_server(resource_path="/elsewhere") as (url, provider),
        pool_of(machine(url, provider), engine) as pool,
    ):
        with pytest.raises(MCPServerUnavailableError) as raised:
            await pool.list_tools("remote")
        assert "does not match" in raised.value.detail, raised.value.detail
        assert provider.grants == {}  # the client's credentials were never sent
