"""One live process per instance id: a gateway that finds its id held by a live process refuses to start,
instead of marking that process's runs `interrupted` as an earlier start's leftovers.

SQLite (one host): a POSIX lock on one byte per instance id in `.<db file>.instances.lock` beside the database,
held until the process exits (the kernel drops it when the process dies, even by kill -9). PostgreSQL (several
hosts): the id's heartbeat in `instances` is watched for one heartbeat period; one that moves belongs to a
live process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zlib
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from services.runs.engines import async_engine, sqlite_path
from services.runs.lease import HEARTBEATS_PER_LEASE, db_now
from services.runs.tables import instances

POSIX_LOCKS = sys.platform != "win32"  # Windows: no POSIX locks; the lease's warning is all there is
if POSIX_LOCKS:
    import fcntl

_held: dict[str, tuple[int, set[str]]] = {}  # lock file -> (its descriptor, the instance ids this process holds)


class InstanceInUseError(Exception):
    """Another live process runs with this instance id."""

    def __init__(self, instance: str) -> None:
        super().__init__(
            f"another lmstudio-bridge process is running with instance id {instance!r} on this run store; "
            "stop it first, or give this one its own BRIDGE_INSTANCE_ID (or BRIDGE_DATABASE_URL)"
        )
        self.instance = instance


def _lock_file(url: str) -> Path | None:
    path = sqlite_path(url)
    if path is None:
        return None
    file = Path(path).absolute()
    return file.with_name(f".{file.name}.instances.lock")


def _offset(instance: str) -> int:
    return zlib.crc32(instance.encode())


def hold_instance(url: str, instance: str) -> None:
    """Hold `instance` on the SQLite store at `url` until the process exits (or `release_instance`); a no-op when
    this process holds it already, or for other stores. InstanceInUseError when another process holds it."""
    lock = _lock_file(url)
    if lock is None or not POSIX_LOCKS:
        return
    key = str(lock)
    if key not in _held:
        lock.parent.mkdir(parents=True, exist_ok=True)
        _held[key] = (os.open(lock, os.O_RDWR | os.O_CREAT, 0o644), set())
    fd, ids = _held[key]
    if instance in ids:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(instance), os.SEEK_SET)
    except OSError:
        raise InstanceInUseError(instance) from None
    ids.add(instance)


def release_instance(url: str, instance: str) -> None:
    """Let go of `instance` (the descriptor stays open: closing it would drop every lock of this process on it)."""
    lock = _lock_file(url)
    if lock is None or not POSIX_LOCKS or str(lock) not in _held:
        return
    fd, ids = _held[str(lock)]
    if instance in ids:
        ids.discard(instance)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _offset(instance), os.SEEK_SET)


async def instance_heartbeat_moves(url: str, instance: str, lease_s: float) -> bool:
    """Whether a live process renews `instance`'s heartbeat: its row is fresh and its heartbeat changes within
    one heartbeat period (and a second). False when there is no row, a stale one, or no store to ask yet."""
    engine = async_engine(url)
    now = db_now(engine.dialect.name)
    query = select(instances.c.heartbeat_at, now).where(instances.c.id == instance)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None or row[1] - row[0] >= lease_s:
                return False
            first = row[0]
            deadline = time.monotonic() + lease_s / HEARTBEATS_PER_LEASE + 1.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                row = (await conn.execute(query)).first()
                await conn.rollback()  # a fresh snapshot for the next look
                if row is None:
                    return False  # it shut down cleanly
                if row[0] != first:
                    return True
            return False
    except (DBAPIError, OSError):  # no such table yet, or no database: start-up reports it
        return False
    finally:
        await engine.dispose()
