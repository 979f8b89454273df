"""The store's connections: the async engine (SQLite with WAL, or PostgreSQL) and SQLite's writer thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import URL, Connection, Executable, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL (readers never block the writer) and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":  # WAL stays set in the file: switched once, by its first user
        cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a killed process loses no committed transaction (a power cut may lose the last ones)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class StoreFileGoneError(Exception):
    """The SQLite file the store opened was deleted or replaced: writing on would go to a file nobody reads."""


class SQLiteWriter:
    """The SQLite writer's connection, used from one worker thread only: a batch is one thread call. Before each
    batch it checks that the database file is still the one it opened (StoreFileGoneError otherwise)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30})
        event.listen(self.engine, "connect", sqlite_pragmas)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-store-writer")
        self.conn: Connection | None = None
        database = url.database
        self.path = database if database and database != ":memory:" else None
        self.identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def _check(self) -> None:
        if self.path is not None and self._stat() != self.identity:
            raise StoreFileGoneError(f"the database file {self.path} was deleted or replaced")

    def _reset(self) -> None:
        """Forget the connection (the file is gone) and take the file now at the path as the store's."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.engine.dispose()
        self.identity = self._stat()

    async def check(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._check)

    async def reset(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._reset)

    def _write(self, plan_of: Callable[[], list[tuple[Executable, Any]]]) -> None:
        self._check()
        plan = plan_of()
        if self.conn is None:
            self.conn = self.engine.connect()
        try:
            with self.conn.begin():
                for statement, params in plan:
                    self.conn.execute(statement, params)
        except Exception:
            self.conn.close()
            self.conn = None
            raise

    async def write(self, plan_of: Callable[[], list[tuple[Executable, Any]]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._write, plan_of)

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.engine.dispose()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._close)
        self.thread.shutdown(wait=False)


def sqlite_path(url: str) -> str | None:
    """The file of a `sqlite+aiosqlite:///path` URL (None for other stores or in-memory)."""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix) or url.endswith(":memory:"):
        return None
    return url.removeprefix(prefix).split("?", 1)[0]
