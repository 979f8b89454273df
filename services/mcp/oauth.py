"""OAuth 2.1 toward remote MCP servers: each server's tokens (kept sealed in the run store's database by a
`TokenVault`), whether it waits for a person's login, and the MCP SDK's OAuth client that uses them
(services/mcp/oauth_provider.py, imported with a server's first connection)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from services.mcp.config import MCPServerConfig, safe_url
from services.text import learn_secret

if TYPE_CHECKING:
    from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

DEFAULT_REFRESH_MARGIN_S = 60.0  # a token this close to its expiry is refreshed before it is used


def login_hint(name: str) -> str:
    return f"MCP server {name!r} needs a login: run `lmstudio-bridge auth {name}`"


class TokenVault(Protocol):
    """Where a server's OAuth record lives (services/runs/oauth_tokens.py: sealed in the run store)."""

    async def load(self, server: str, url: str) -> tuple[dict[str, Any], float] | None: ...

    async def save(self, server: str, url: str, record: dict[str, Any]) -> float: ...

    async def forget(self, server: str) -> None: ...


class ServerTokens:
    """One server's tokens and client registration: the SDK's `TokenStorage`, backed by the vault. Every token
    and client secret it sees is a secret of the process's redactors (`learn_secret`) before anything could
    log it."""

    def __init__(self, name: str, url: str, vault: TokenVault) -> None:
        self.name = name
        self.url = url
        self.vault = vault
        self._record: dict[str, Any] = {}
        self._version: float | None = None

    @property
    def expires_at(self) -> float | None:
        """When the stored access token expires (seconds since the epoch), if it said."""
        value = self._record.get("expires_at")
        return float(value) if value is not None else None

    async def reload(self) -> bool:
        """Read the vault again; True when the record changed since it was last read or written here (a login
        in another process, a refresh by another replica)."""
        found = await self.vault.load(self.name, self.url)
        record, version = found if found is not None else ({}, None)
        changed = version != self._version
        self._record, self._version = record, version
        self._note(record)
        return changed

    async def forget(self) -> None:
        await self.vault.forget(self.name)
        self._record, self._version = {}, None

    async def _write(self) -> None:
        self._note(self._record)
        self._version = await self.vault.save(self.name, self.url, self._record)

    @staticmethod
    def _note(record: dict[str, Any]) -> None:
        tokens, client = record.get("tokens") or {}, record.get("client") or {}
        for value in (tokens.get("access_token"), tokens.get("refresh_token"), client.get("client_secret")):
            learn_secret(value)

    # --- the SDK's TokenStorage ----------------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        from mcp.shared.auth import OAuthToken

        if self._version is None:
            await self.reload()
        tokens = self._record.get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        learn_secret(tokens.access_token)
        learn_secret(tokens.refresh_token)
        self._record["tokens"] = tokens.model_dump(mode="json", exclude_none=True)
        self._record["expires_at"] = time.time() + int(tokens.expires_in) if tokens.expires_in is not None else None
        await self._write()

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        from mcp.shared.auth import OAuthClientInformationFull

        if self._version is None:
            await self.reload()
        client = self._record.get("client")
        return OAuthClientInformationFull.model_validate(client) if client else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        learn_secret(client_info.client_secret)
        self._record["client"] = client_info.model_dump(mode="json", exclude_none=True)
        await self._write()


class ServerAuth:
    """OAuth for one remote server: its tokens, its SDK provider (an `httpx2.Auth`) and its login state."""

    def __init__(self, cfg: MCPServerConfig, vault: TokenVault, margin_s: float) -> None:
        assert cfg.oauth is not None and cfg.url is not None
        self.cfg = cfg
        self.oauth = cfg.oauth
        self.margin_s = margin_s
        self.tokens = ServerTokens(cfg.name, safe_url(cfg.url) or cfg.url, vault)
        self.problem: str | None = None  # why the server's last token could not be had or was refused
        self.needs_login = False  # only a person's login (`lmstudio-bridge auth`) helps
        self.reloaded = False  # tokens were read from the store since the provider last looked: it starts over
        self.provider: Any = None  # the SDK's OAuth client of the gateway's connections (oauth_provider.py)

    @property
    def for_person(self) -> bool:
        return self.oauth.grant == "authorization_code"

    @property
    def waiting(self) -> str | None:
        """Why the server waits for a person's login (None when it does not)."""
        return self.problem if self.needs_login else None

    def refused(self, problem: str) -> None:
        """The server cannot be reached with the tokens at hand."""
        self.problem = f"{login_hint(self.cfg.name)} ({problem})" if self.for_person else problem
        self.needs_login = self.for_person

    def accepted(self) -> None:
        self.problem = None
        self.needs_login = False

    async def recheck(self) -> None:
        """While the server waits for a login: has one happened since (another process)?"""
        if self.needs_login and await self.tokens.reload() and await self.tokens.get_tokens() is not None:
            self.reloaded = True
            self.accepted()


class OAuthClients:
    """Every remote server's OAuth, one `ServerAuth` per server name, shared by the gateway's pools."""

    def __init__(self, vault: TokenVault | None, margin_s: float = DEFAULT_REFRESH_MARGIN_S) -> None:
        self.vault = vault
        self.margin_s = margin_s
        self._auths: dict[str, ServerAuth] = {}

    def for_server(self, cfg: MCPServerConfig) -> ServerAuth | None:
        """The server's OAuth; None for a server without `bridge.oauth` (or without a vault: no key)."""
        if cfg.oauth is None or self.vault is None:
            return None
        auth = self._auths.get(cfg.name)
        if auth is None or auth.cfg != cfg:
            auth = self._auths[cfg.name] = ServerAuth(cfg, self.vault, self.margin_s)
        return auth

    async def check(self, servers: dict[str, MCPServerConfig]) -> None:
        """Mark every server a person must log in to that has no tokens yet (read at start-up)."""
        for cfg in servers.values():
            auth = self.for_server(cfg)
            if auth is not None and auth.for_person and not cfg.disabled:
                await auth.tokens.reload()
                if await auth.tokens.get_tokens() is None:
                    auth.refused("not logged in yet")
