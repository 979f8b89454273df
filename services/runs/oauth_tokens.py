"""OAuth tokens of remote MCP servers in the run store's database (the `oauth_tokens` table), sealed with
Fernet (`cryptography`) under BRIDGE_TOKEN_KEY: a row shows the server's name and URL, never a token.

Several keys (comma-separated, newest first) let an operator rotate: rows are sealed with the first and
opened with any of them."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runs.tables import oauth_tokens

log = logging.getLogger(__name__)


def check_token_keys(keys: Sequence[str]) -> None:
    """Raises ValueError naming the first key that is not a Fernet key (32 url-safe base64-encoded bytes)."""
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {i} is not a Fernet key (32 url-safe base64-encoded bytes); make one with: python -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None


class TokenVault:
    """Sealed OAuth records (tokens, the client's registration, the tokens' expiry) per server."""

    def __init__(self, engine: AsyncEngine, keys: Sequence[str]) -> None:
        check_token_keys(keys)
        if not keys:
            raise ValueError("no key: set BRIDGE_TOKEN_KEY")
        self.engine = engine
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    async def load(self, server: str, url: str) -> tuple[dict[str, Any], float] | None:
        """The server's record and when it was written; None when there is none for this URL or it cannot be
        opened (another key, or tampered with: the server then needs a new login)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(oauth_tokens).where(oauth_tokens.c.server == server))).first()
        if row is None or row.url != url:
            return None
        try:
            record = json.loads(self._fernet.decrypt(row.sealed.encode()))
        except InvalidToken:
            log.warning("OAuth tokens of MCP server %r cannot be opened with BRIDGE_TOKEN_KEY: log in again", server)
            return None
        return record, float(row.updated_at)

    async def save(self, server: str, url: str, record: dict[str, Any]) -> float:
        """Seal and store the server's record (replacing any); returns when it was written."""
        sealed = self._fernet.encrypt(json.dumps(record).encode()).decode()
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(delete(oauth_tokens).where(oauth_tokens.c.server == server))
            await conn.execute(insert(oauth_tokens).values(server=server, url=url, sealed=sealed, updated_at=now))
        return now

    async def forget(self, server: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(oauth_tokens).where(oauth_tokens.c.server == server))
