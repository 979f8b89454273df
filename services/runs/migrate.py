"""Bringing a database to the run store's current schema, once per start-up.

An empty database gets the tables of `tables.py` and is stamped with the newest revision (Alembic's own
recipe for new databases); a database at an older revision is upgraded by Alembic's migrations. Alembic
is imported only for that upgrade, so a gateway does not carry it in memory for nothing.
`tests/services/runs/test_migrations.py` checks that the migrations build exactly the tables of `tables.py`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import Column, Connection, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runs.tables import metadata

HEAD = "0005"  # the newest revision in migrations/versions
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK = 0x6C6D7362  # advisory lock id: gateways starting together on one database migrate one at a time
_ATTEMPTS = 3  # several processes creating one SQLite file at once: the losers find it made and go on

# Alembic's bookkeeping table, as Alembic itself creates it
_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), primary_key=True, nullable=False),
)


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(select(_version.c.version_num)).scalar()


def _bring_up(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK})
    revision = _revision(conn)  # again: another process may have done it while we waited for the lock
    if revision == HEAD:
        return
    if revision is None and not inspect(conn).get_table_names():
        metadata.create_all(conn)
        _version.create(conn)
        conn.execute(insert(_version).values(version_num=HEAD))
        return
    upgrade(conn)


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Alembic's `upgrade head` (or to `revision`) on this connection (the migrations in `migrations/versions`)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


_MIGRATING = asyncio.Lock()  # Alembic keeps module-level state: one migration at a time in a process


async def migrate(engine: AsyncEngine) -> None:
    """Create or upgrade the tables; a no-op (one query) when the store is current."""
    for attempt in range(_ATTEMPTS):
        try:
            async with engine.connect() as conn:
                if await conn.run_sync(_revision) == HEAD:
                    return
            async with _MIGRATING, engine.begin() as conn:
                await conn.run_sync(_bring_up)
            return
        # e.g. "table runs already exists": another process made it first; or, on a new SQLite file, "database
        # is locked": another process is switching it to WAL as this one connects
        except DBAPIError:
            if attempt == _ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
